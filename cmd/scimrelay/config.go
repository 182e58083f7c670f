// SPDX-License-Identifier: Apache-2.0

package main

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	"github.com/scimrelay/scimrelay/config"
	"github.com/scimrelay/scimrelay/relay/events"
	"github.com/scimrelay/scimrelay/sinks"
)

// loadConfig loads relay.yaml and checks what config cannot know on its
// own: that each sink's event patterns name events of the catalog.
func loadConfig(path string) (*config.Config, error) {
	cfg, err := config.Load(path)
	if err != nil {
		return nil, err
	}
	var problems config.Problems
	for i, s := range cfg.Sinks {
		for j, e := range s.Events {
			if _, err := events.ParsePattern(e); err != nil {
				problems = append(problems, config.Problem{Field: fmt.Sprintf("sinks[%d].events[%d]", i, j), Message: err.Error()})
			}
		}
	}
	if len(problems) > 0 {
		return nil, fmt.Errorf("%s: %w", path, problems)
	}
	return cfg, nil
}

// publicOrigin is where identity providers reach the SCIM listener:
// public_url, else the listen address over plain HTTP.
func publicOrigin(cfg *config.Config) string {
	if cfg.PublicURL != "" {
		return strings.TrimRight(cfg.PublicURL, "/")
	}
	return "http://" + cfg.Listen
}

// sinkConfigs converts relay.yaml's sinks into what the sinks package takes.
func sinkConfigs(list []config.Sink) []sinks.Config {
	out := make([]sinks.Config, 0, len(list))
	for _, c := range list {
		sc := sinks.Config{
			Name: c.Name, URL: c.URL, Secret: c.Secret, Events: c.Events, Tenants: c.Tenants,
			Format: c.Format, Timeout: time.Duration(c.Timeout), Headers: c.Headers,
			AllowPrivate: c.AllowPrivate, Concurrency: c.Concurrency,
		}
		for _, d := range c.Retry {
			sc.Retry = append(sc.Retry, time.Duration(d))
		}
		out = append(out, sc)
	}
	return out
}

// newLogger builds the process logger from relay.yaml's log section.
func newLogger(c config.Log, w io.Writer) (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(c.Level)); err != nil {
		return nil, errors.New("log.level: " + err.Error())
	}
	opts := &slog.HandlerOptions{Level: level}
	if c.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return slog.New(slog.NewTextHandler(w, opts)), nil
}

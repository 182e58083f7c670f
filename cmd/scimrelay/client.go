// SPDX-License-Identifier: Apache-2.0

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/scimrelay/scimrelay/config"
)

// adminClient is how every command but serve reaches the running relay:
// its admin API on admin_listen, with the admin token.
type adminClient struct {
	base    string
	token   string
	http    *http.Client
	timeout time.Duration // per request; 0 waits as long as the command runs
}

// configFlagOn adds --config to a command.
func configFlagOn(cmd *cobra.Command) {
	cmd.Flags().StringP("config", "c", "relay.yaml", "path to relay.yaml")
}

// configPathOf returns a command's --config.
func configPathOf(cmd *cobra.Command) string {
	p, _ := cmd.Flags().GetString("config")
	return p
}

func newAdminClient(configPath string) (*adminClient, error) {
	cfg, err := config.Read(configPath, "admin_listen", "admin.token", "data_dir")
	if err != nil {
		return nil, err
	}
	token := cfg.Admin.Token
	if token == "" {
		b, err := os.ReadFile(cfg.AdminTokenPath())
		if err != nil {
			return nil, fmt.Errorf("no admin token: admin.token in %s is empty and %s cannot be read (%v); run this where serve runs, or set SCIMRELAY_ADMIN_TOKEN", configPath, cfg.AdminTokenPath(), err)
		}
		token = strings.TrimSpace(string(b))
	}
	return &adminClient{base: adminBaseURL(cfg), token: token, http: &http.Client{}, timeout: time.Minute}, nil
}

// adminBaseURL is where a command on the relay's machine reaches its admin
// listener: admin_listen, with a wildcard address replaced by loopback.
func adminBaseURL(cfg *config.Config) string {
	host := cfg.AdminListen
	if strings.HasPrefix(host, "0.0.0.0:") || strings.HasPrefix(host, "[::]:") || strings.HasPrefix(host, ":") {
		host = "127.0.0.1:" + host[strings.LastIndexByte(host, ':')+1:]
	}
	return "http://" + host
}

// do sends a JSON request and decodes a JSON answer into out (if not nil).
func (c *adminClient) do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	if c.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.timeout)
		defer cancel()
	}
	res, err := c.send(ctx, method, path, body)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	if out == nil {
		_, _ = io.Copy(io.Discard, res.Body)
		return nil
	}
	if err := json.NewDecoder(res.Body).Decode(out); err != nil {
		return fmt.Errorf("reading the relay's answer: %w", err)
	}
	return nil
}

// send performs a request and turns refusals into errors that say what to do.
func (c *adminClient) send(ctx context.Context, method, path string, body io.Reader) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	res, err := c.http.Do(req)
	if err != nil {
		return nil, unreachableError{fmt.Errorf("cannot reach the relay's admin API at %s: %w (is scimrelay serve running with this admin_listen?)", c.base, err)}
	}
	if res.StatusCode >= 300 {
		defer res.Body.Close()
		var e struct {
			Error string `json:"error"`
		}
		b, _ := io.ReadAll(io.LimitReader(res.Body, 64<<10))
		if json.Unmarshal(b, &e) != nil || e.Error == "" {
			e.Error = strings.TrimSpace(string(b))
		}
		if res.StatusCode == http.StatusUnauthorized {
			return nil, fmt.Errorf("the relay refused the admin token: %s", e.Error)
		}
		return nil, errors.New(e.Error)
	}
	return res, nil
}

// SPDX-License-Identifier: Apache-2.0

package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"gopkg.in/yaml.v3"

	"github.com/scimrelay/scimrelay/cmd/scimrelay/internal/admin"
	"github.com/scimrelay/scimrelay/cmd/scimrelay/internal/adminclient"
	"github.com/scimrelay/scimrelay/config"
)

// configEnv names relay.yaml for every command; --config wins.
const configEnv = "SCIMRELAY_CONFIG"

// configFlagOn adds --config to a command.
func configFlagOn(cmd *cobra.Command) {
	cmd.Flags().StringP("config", "c", "", "path to relay.yaml (default $"+configEnv+", else ./relay.yaml)")
}

// configPathOf returns a command's relay.yaml: --config when given, else
// $SCIMRELAY_CONFIG when set, else ./relay.yaml.
func configPathOf(cmd *cobra.Command) string {
	if p, _ := cmd.Flags().GetString("config"); p != "" {
		return p
	}
	if env := os.Getenv(configEnv); env != "" {
		return env
	}
	return "relay.yaml"
}

// configNamed reports whether the caller named the command's relay.yaml,
// with --config or $SCIMRELAY_CONFIG, rather than leaving it to the
// working directory's.
func configNamed(cmd *cobra.Command) bool {
	p, _ := cmd.Flags().GetString("config")
	return p != "" || os.Getenv(configEnv) != ""
}

// adminClientKeys are the keys of relay.yaml the admin client reads.
var adminClientKeys = []string{"admin_listen", "admin.token", "data_dir", "admin.tls.cert_file"}

// adminClientOf is how every command but serve reaches the running
// relay: its admin API on admin_listen, with the admin token, as the
// command's relay.yaml says. The working directory's is taken only when
// no one else could have put it there (readWorkingDirConfig).
func adminClientOf(cmd *cobra.Command) (*adminclient.Client, error) {
	return adminClientWaiting(cmd, 0)
}

// adminClientWaiting is adminClientOf for a request the relay may work on
// for up to bound before it answers (a reload, an event-key rotation): the
// client waits that long and half a minute more. With the default minute
// a reload of a worker waiting two minutes for its front end's bucket
// gave up first and said the relay could not be reached (exit 3), while
// the relay answered later with what it applied.
func adminClientWaiting(cmd *cobra.Command, bound time.Duration) (*adminclient.Client, error) {
	c, err := adminClient(cmd)
	if err != nil {
		return nil, err
	}
	c.Timeout = max(c.Timeout, bound+30*time.Second)
	return c, nil
}

// adminClient is the client of the admin API that cmd's relay.yaml names.
func adminClient(cmd *cobra.Command) (*adminclient.Client, error) {
	path := configPathOf(cmd)
	if configNamed(cmd) {
		return newAdminClient(path)
	}
	data, err := readWorkingDirConfig(path)
	if err != nil {
		return nil, err
	}
	cfg, err := config.ReadData(path, data, adminClientKeys...)
	if err != nil {
		return nil, err
	}
	return adminClientFor(cfg, path)
}

// newAdminClient is the admin client that the relay.yaml at configPath
// gives.
func newAdminClient(configPath string) (*adminclient.Client, error) {
	cfg, err := config.Read(configPath, adminClientKeys...)
	if err != nil {
		return nil, err
	}
	return adminClientFor(cfg, configPath)
}

// adminClientFor is the admin client of cfg, read from configPath.
func adminClientFor(cfg *config.Config, configPath string) (*adminclient.Client, error) {
	token := cfg.Admin.Token
	if token == "" {
		b, err := os.ReadFile(cfg.AdminTokenPath())
		if err != nil {
			return nil, fmt.Errorf("no admin token: admin.token in %s is empty and %s cannot be read (%v); run this where serve runs, or %s", configPath, cfg.AdminTokenPath(), err, adminTokenHint(configPath))
		}
		token = strings.TrimSpace(string(b))
	}
	hc, err := adminHTTPClient(cfg)
	if err != nil {
		return nil, err
	}
	return &adminclient.Client{BaseURL: adminBaseURL(cfg), Token: token, HTTP: hc, Timeout: time.Minute}, nil
}

// adminTokenHint says how to give the CLI an admin token through the
// relay.yaml at path, as it is written: set the variable its admin.token
// reads, or add the token under its admin section, or add the section.
// Each is what works when followed: the whole line added to a file that
// has an admin section already made it invalid ("admin: is set twice").
func adminTokenHint(path string) string {
	var file map[string]yaml.Node // a key given null ("admin:" with its lines commented out) is there
	raw, err := os.ReadFile(path)
	if err == nil {
		err = yaml.Unmarshal(raw, &file)
	}
	section, ok := file["admin"]
	if err != nil || !ok {
		return fmt.Sprintf("give %s the line admin: {token: \"${SCIMRELAY_ADMIN_TOKEN}\"} and set SCIMRELAY_ADMIN_TOKEN", path)
	}
	var admin map[string]yaml.Node // "token:" with no value (null) is there too; nil if no mapping
	_ = section.Decode(&admin)
	tokenNode, ok := admin["token"]
	var token string
	if !ok || tokenNode.Decode(&token) != nil {
		return fmt.Sprintf("add token: \"${SCIMRELAY_ADMIN_TOKEN}\" under admin: in %s and set SCIMRELAY_ADMIN_TOKEN", path)
	}
	if token == "" { // "", or null
		// The key is there, empty: a second token: line would be "set twice".
		return fmt.Sprintf("change admin.token in %s to \"${SCIMRELAY_ADMIN_TOKEN}\" and set SCIMRELAY_ADMIN_TOKEN", path)
	}
	if names := config.EnvNames(token); len(names) > 0 {
		return fmt.Sprintf("set %s, which %s reads admin.token from", strings.Join(names, " and "), path)
	}
	return fmt.Sprintf("set admin.token in %s", path)
}

// readWorkingDirConfig reads the relay.yaml of the working directory,
// refusing one that someone else could have put there: one owned by
// another user than the caller and root, or one any user may write. The
// admin token goes where that file's admin_listen says, and is read from
// its data_dir: a file planted in a shared directory (/tmp, a checkout of
// someone else's) would send it to its author. The file is checked as
// opened and read from the same descriptor, so that it cannot be swapped
// between the two, and opened without waiting, so that a FIFO put in its
// place cannot hold the command. A file named by --config or
// $SCIMRELAY_CONFIG is the caller's choice and is not checked (a Compose
// bind mount is owned by the host's user, not the container's).
func readWorkingDirConfig(path string) ([]byte, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, fmt.Errorf("reading configuration: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("reading configuration: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("not using ./%s: it is not a regular file (%v); name the file to use with --config", path, fi.Mode().Type())
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		switch {
		case int(st.Uid) != os.Geteuid() && st.Uid != 0:
			return nil, fmt.Errorf("not using ./%s: it belongs to uid %d, neither you nor root, and it says where the admin token goes; name it with --config if you trust it", path, st.Uid)
		case fi.Mode().Perm()&0o002 != 0:
			return nil, fmt.Errorf("not using ./%s: any user may write it (mode %v), and it says where the admin token goes; chmod o-w it, or name it with --config", path, fi.Mode().Perm())
		}
	}
	data, err := io.ReadAll(f)
	if err != nil {
		return nil, fmt.Errorf("reading configuration: %w", err)
	}
	return data, nil
}

// adminBaseURL is where a command on the relay's machine reaches its admin
// listener: admin_listen, with a wildcard address replaced by loopback,
// over HTTPS with admin.tls set.
func adminBaseURL(cfg *config.Config) string {
	host := cfg.AdminListen
	if strings.HasPrefix(host, "0.0.0.0:") || strings.HasPrefix(host, "[::]:") || strings.HasPrefix(host, ":") {
		host = "127.0.0.1:" + host[strings.LastIndexByte(host, ':')+1:]
	}
	return schemeOf(cfg.Admin.TLS) + "://" + host
}

// heldFilters checks --tenant and --sink filters that a name no longer
// configured may still answer: the relay keeps what a removed tenant left
// (credentials, log entries, events) until it is purged, and a removed
// sink's delivery attempts until it is forgotten. A name that is not
// configured comes back as unknown, the usage error to give if the relay
// answers 404 for it too (answeredFilters); err is any other failure.
func heldFilters(ctx context.Context, c *adminclient.Client, tenant, sink string) (unknown, err error) {
	err = checkFilters(ctx, c, tenant, sink)
	var usage usageError
	if errors.As(err, &usage) {
		return err, nil
	}
	return nil, err
}

// answeredFilters is err, or unknown (heldFilters) when the relay
// answered 404: the name is not configured and holds nothing asked for.
func answeredFilters(unknown, err error) error {
	var api *adminclient.Error
	if unknown != nil && errors.As(err, &api) && api.Status == http.StatusNotFound {
		return unknown
	}
	return err
}

// checkFilters refuses, as a usage error, a --tenant or --sink filter that
// names no tenant or sink of the running relay: the answer would be
// empty, which reads as "nothing happened" rather than "misspelt". An
// empty filter is not checked.
func checkFilters(ctx context.Context, c *adminclient.Client, tenant, sink string) error {
	if tenant != "" {
		list, err := c.Tenants(ctx)
		if err != nil {
			return err
		}
		names := make([]string, len(list))
		for i, t := range list {
			names[i] = t.Name
		}
		if !slices.Contains(names, tenant) {
			return usageError{fmt.Errorf("--tenant %s: no such tenant (tenants: %s)", tenant, admin.TenantNames(names))}
		}
	}
	if sink != "" {
		var api *adminclient.Error
		if _, err := c.Sink(ctx, sink); errors.As(err, &api) && api.Status == http.StatusNotFound {
			return usageError{fmt.Errorf("--sink %s: no such sink", sink)}
		} else if err != nil {
			return err
		}
	}
	return nil
}

// SPDX-License-Identifier: Apache-2.0

package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/scimrelay/scimrelay/config"
	"github.com/scimrelay/scimrelay/relay"
)

// ensureTokens gives every tenant its first token, one that never had a
// credential (relay.EnsureToken; not one whose credentials were revoked or
// expired): the two values
// an Entra admin pastes, shown once. They are printed when the relay's
// output is a terminal (s.out); otherwise they go to data_dir/initial-token
// (mode 0600) and the log says where, so that a secret never lands in
// journald or kubectl logs. The file is opened before any token is made,
// and a secret written to it before its token is stored, so that one that
// cannot be written is never created.
func (s *server) ensureTokens(ctx context.Context) (err error) {
	cfg := s.config()
	path := cfg.InitialTokenPath()
	var file *os.File
	if s.out == nil {
		if file, err = openSecretFile(path); err != nil {
			return fmt.Errorf("opening %s for first tokens: %w", path, err)
		}
		defer func() {
			err = errors.Join(err, file.Close())
			_ = removeIfEmpty(path)
		}()
	}
	for _, t := range cfg.Tenants {
		// To the file, the secret is written and flushed before the token
		// is stored (relay.EnsureToken): stored first, a token whose
		// secret a full disk kept out of the file was one nobody had, and
		// the next start made none.
		var show func(string) error
		shownAt := int64(-1) // where the file ended before the secret, once written
		if file != nil {
			show = func(secret string) error {
				end, err := file.Seek(0, io.SeekEnd)
				if err == nil {
					shownAt = end
					_, err = fmt.Fprintf(file, "tenant %s (expires in 90 days)\n  Tenant URL:    %s\n%s  Secret Token:  %s\n", t.Name, s.tenantURL(t.Name), s.originHint(), secret)
				}
				if err == nil {
					err = file.Sync()
				}
				if err != nil {
					return fmt.Errorf("writing its first token to %s: %w", path, err)
				}
				return nil
			}
		}
		secret, created, err := s.store.EnsureToken(ctx, t.Name, show)
		if err != nil {
			if shownAt >= 0 {
				_ = file.Truncate(shownAt) // a secret written, not stored: it opens nothing
			}
			return fmt.Errorf("tenant %s: %w", t.Name, err)
		}
		if !created {
			continue
		}
		if file == nil {
			fmt.Fprintf(s.out, "\nTenant %q had no token, so scimrelay created one. In Microsoft Entra ID, under Provisioning > Admin Credentials, enter:\n"+
				"  Tenant URL:    %s\n%s  Secret Token:  %s\n"+
				"The token is shown only this once and expires in 90 days (scimrelay token rotate --tenant %s issues a new one).\n\n",
				t.Name, s.tenantURL(t.Name), s.originHint(), secret, t.Name)
			continue
		}
		s.log.Warn("created a SCIM token for a tenant without one; paste it into Microsoft Entra ID, then delete the file", "tenant", t.Name, "file", path)
	}
	return nil
}

// openSecretFile opens a file for appending that only its owner can read.
func openSecretFile(path string) (*os.File, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, err
	}
	// A secret must not follow a link someone put in the file's place to a
	// file others can read. A new file is created exclusively, which no
	// link survives (not even one to nothing, whose target would be
	// created); a file already there is opened without creating anything,
	// and must be the file opened, a regular one.
	notRegular := errors.New("not a regular file (a symbolic link?); remove it")
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL|os.O_APPEND, 0o600)
	if errors.Is(err, fs.ErrExist) {
		f, err = os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
		if errors.Is(err, fs.ErrNotExist) {
			return nil, notRegular // a link to nothing
		}
	}
	if err != nil {
		return nil, err
	}
	opened, err := f.Stat()
	if err == nil {
		var there os.FileInfo
		if there, err = os.Lstat(path); err == nil && (!there.Mode().IsRegular() || !os.SameFile(opened, there)) {
			err = notRegular
		}
	}
	if err == nil {
		err = f.Chmod(0o600) // in case someone widened it
	}
	if err != nil {
		_ = f.Close()
		return nil, err
	}
	return f, nil
}

// removeIfEmpty removes a file that holds nothing.
func removeIfEmpty(path string) error {
	if fi, err := os.Stat(path); err != nil || fi.Size() > 0 {
		return err
	}
	return os.Remove(path)
}

// adminToken returns the admin API's token: relay.yaml's, else the one in
// data_dir/admin.token, generated on first start.
func adminToken(cfg *config.Config, log *slog.Logger) (string, error) {
	if cfg.Admin.Token != "" {
		return cfg.Admin.Token, nil
	}
	path := cfg.AdminTokenPath()
	if tok, err := readAdminTokenFile(path, log); err != nil || tok != "" {
		return tok, err
	}
	var raw [32]byte
	_, _ = rand.Read(raw[:]) // crypto/rand.Read never fails (Go 1.24+)
	tok := "scimrelay_admin_" + base64.RawURLEncoding.EncodeToString(raw[:])
	// As carefully as the first SCIM tokens: created exclusively, 0600,
	// never through a link.
	f, err := openSecretFile(path)
	if err == nil {
		_, err = f.WriteString(tok + "\n")
		err = errors.Join(err, f.Close())
	}
	if err != nil {
		_ = removeIfEmpty(path) // a start with room writes one again
		return "", fmt.Errorf("writing the admin token to %s: %w", path, err)
	}
	log.Info("generated an admin token for the CLI", "path", path)
	return tok, nil
}

// readAdminTokenFile reads the admin token serve generated before; "" when
// there is none. The file must be a regular one; one others could read is
// made its owner's alone, with a warning, since the token may be known.
func readAdminTokenFile(path string, log *slog.Logger) (string, error) {
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("reading the admin token: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return "", fmt.Errorf("reading the admin token: %s is not a regular file (a symbolic link?); remove it and serve writes a new one", path)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		if err := os.Chmod(path, 0o600); err != nil {
			return "", fmt.Errorf("reading the admin token: making %s its owner's alone: %w", path, err)
		}
		log.Warn("the admin token file was readable by others (its group, or everyone; a volume's fsGroup does this); it is now its owner's alone. If someone could have read it, delete the file and restart for a new token", "path", path, "mode", fi.Mode().Perm().String())
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("reading the admin token: %w", err)
	}
	// As short as relay.yaml's admin.token may not be: someone wrote it
	// there, and it can be guessed.
	tok := strings.TrimSpace(string(b))
	if err := relay.CheckStaticToken(tok); err != nil {
		return "", fmt.Errorf("reading the admin token: %s %w; put a longer one there, or delete the file and serve writes a new one", path, err)
	}
	return tok, nil
}

// SPDX-License-Identifier: Apache-2.0

package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/scimrelay/scimrelay/config"
	"github.com/scimrelay/scimrelay/relay"
	"github.com/scimrelay/scimrelay/relay/disk/disktest"
	"github.com/scimrelay/scimrelay/relay/events/eventstest"
)

// relayWithABackup starts a relay, creates ann, backs it up with the CLI
// and creates bob. It returns the relay, its configuration, the relay.yaml
// a CLI on its machine would use for backup and restore (its admin
// listener and token, and its data_dir) and the backup.
func relayWithABackup(t *testing.T) (p *relayProc, c *config.Config, cliYAML, backup string) {
	t.Helper()
	c = testConfig(t, t.TempDir())
	p = startRelay(t, c, roleAll)
	cliYAML = cliConfig(t, p, adminSecret)
	appendDataDir(t, cliYAML, c.DataDir)
	p.createUser(t, "ann")
	backup = filepath.Join(t.TempDir(), "copy.db")
	if code, out, stderr := cli(t, "backup", "--out", backup, "--config", cliYAML); code != exitOK {
		t.Fatalf("backup: %d %s %s", code, out, stderr)
	}
	p.createUser(t, "bob")
	return p, c, cliYAML, backup
}

// appendDataDir adds data_dir to the relay.yaml a CLI uses (cliConfig),
// for the commands that work on the data file (backup, restore).
func appendDataDir(t *testing.T, cliYAML, dataDir string) {
	t.Helper()
	f, err := os.OpenFile(cliYAML, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := fmt.Fprintf(f, "data_dir: %s\n", dataDir); err != nil {
		t.Fatal(err)
	}
}

// userCount is how many users a tenant of the relay has.
func userCount(t *testing.T, p *relayProc) string {
	t.Helper()
	return p.scim("acme", acmeToken, "GET", "/Users?count=0", "").want(t, 200).str("totalResults")
}

// TestCLIRestore: restore refuses a copy that is not a whole data file and
// a data file a running relay holds, changing nothing; with the relay
// stopped it puts the backup in place, keeps the file it replaced beside
// it, and the relay started again serves the state at the backup.
func TestCLIRestore(t *testing.T) {
	p, c, cfg, backup := relayWithABackup(t)
	dataDir := c.DataDir

	short := filepath.Join(t.TempDir(), "short.db")
	whole, err := os.ReadFile(backup)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(short, whole[:len(whole)/2], 0o600); err != nil {
		t.Fatal(err)
	}
	if code, _, stderr := cli(t, "restore", "--from", backup, "--config", cfg); code != exitError || !strings.Contains(stderr, "a relay is running on") {
		t.Fatalf("restore under a running relay: %d %s", code, stderr)
	}
	if n := userCount(t, p); n != "2" {
		t.Fatalf("after the refused restore the relay has %s users, want 2", n)
	}
	p.stop()
	if code, _, stderr := cli(t, "restore", "--from", short, "--config", cfg); code != exitError || !strings.Contains(stderr, "cut short") || !strings.Contains(stderr, "nothing was changed") {
		t.Fatalf("restore of a copy cut short: %d %s", code, stderr)
	}
	if entries, _ := filepath.Glob(filepath.Join(dataDir, "*restore*")); len(entries) != 0 {
		t.Fatalf("a refused restore left %v", entries)
	}

	code, out, stderr := cli(t, "restore", "--from", backup, "--config", cfg)
	kept, found := strings.CutPrefix(strings.Split(out, "\n")[1], "the data file it replaced is kept at ")
	if code != exitOK || !found || !strings.Contains(out, "restart provisioning in Entra") {
		t.Fatalf("restore: %d\n%s\n%s", code, out, stderr)
	}
	if err := relay.CheckCopy(kept); err != nil {
		t.Fatalf("the file kept, %s: %v", kept, err)
	}
	p = startRelay(t, c, roleAll)
	if n := userCount(t, p); n != "1" {
		t.Fatalf("the restored relay has %s users, want ann alone", n)
	}

	// The file kept, restored from stdin (--from -, as into a container),
	// brings bob back.
	p.stop()
	in, err := os.Open(kept)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	stdin := os.Stdin
	os.Stdin = in
	code, out, stderr = cli(t, "restore", "--from", "-", "--keep=false", "--config", cfg)
	os.Stdin = stdin
	if code != exitOK || !strings.HasPrefix(out, "restored the backup on stdin to ") || strings.Contains(out, "kept at") {
		t.Fatalf("restore from stdin: %d\n%s\n%s", code, out, stderr)
	}
	p = startRelay(t, c, roleAll)
	if n := userCount(t, p); n != "2" {
		t.Fatalf("restored from the file kept, the relay has %s users, want ann and bob", n)
	}
}

// TestRestoreSaysWhatItTakesBack: restore lists what the data file it
// replaces held that the backup does not, for the operator to set right:
// the users and groups made since (their events reached the sinks) and
// deleted since, each by id, the credentials made (a rotation's too) and
// revoked since, the subscribers added since, and the OAuth key rotated
// since (README, Backup and recovery). Restored over a file that holds
// what the backup holds, it says nothing changed; over a file it cannot
// read, that it cannot say.
func TestRestoreSaysWhatItTakesBack(t *testing.T) {
	c := testConfig(t, t.TempDir())
	c.NATS.Listen = fmt.Sprintf("127.0.0.1:%d", eventstest.FreePort(t)) // for subscribers
	p := startRelay(t, c, roleAll)
	cfg := cliConfig(t, p, adminSecret)
	appendDataDir(t, cfg, c.DataDir)
	run := func(args ...string) string { t.Helper(); return cliOK(t, cfg, args...) }
	tokenID := func(name string) string {
		t.Helper()
		var list []relay.Token
		if err := jsonLines(run("token", "list", "--tenant", "acme", "--json"), &list); err != nil {
			t.Fatal(err)
		}
		for _, tok := range list {
			if tok.Name == name && tok.Revoked.IsZero() && tok.Replaced.IsZero() {
				return tok.ID
			}
		}
		t.Fatalf("no live token %s in %v", name, list)
		return ""
	}
	ann := p.createUser(t, "ann")
	staff := p.scim("acme", acmeToken, "POST", "/Groups", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:Group"],"displayName":"staff"}`).want(t, 201).str("id")
	run("token", "create", "--tenant", "acme", "--name", "okta")
	okta := tokenID("okta")
	backup := filepath.Join(t.TempDir(), "copy.db")
	run("backup", "--out", backup)

	bob := p.createUser(t, "bob")
	sales := p.scim("acme", acmeToken, "POST", "/Groups", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:Group"],"displayName":"sales"}`).want(t, 201).str("id")
	p.scim("acme", acmeToken, "DELETE", "/Users/"+ann, "").want(t, 204)
	p.scim("acme", acmeToken, "DELETE", "/Groups/"+staff, "").want(t, 204)
	run("token", "create", "--tenant", "acme", "--name", "entra")
	entra := tokenID("entra")
	run("token", "revoke", okta)
	run("subscriber", "add", "billing", "--out", filepath.Join(t.TempDir(), "billing.nk"))
	run("keys", "rotate", "oauth")
	p.stop()

	out := run("restore", "--from", backup)
	t.Logf("restore says:\n%s", out)
	for _, want := range []string{
		"tenant acme: 2 user(s) and group(s) made since the backup, gone now;", "\n  Users/" + bob + "\n", "\n  Groups/" + sales + "\n",
		"tenant acme: 2 user(s) and group(s) the data file it replaced no longer held (deleted since the backup), back now;", "\n  Users/" + ann + "\n", "\n  Groups/" + staff + "\n",
		"token entra of tenant acme (" + entra + ") was made since the backup and is refused now",
		"token okta of tenant acme (" + okta + ") was revoked since the backup and is live again: revoke it again",
		"subscriber billing was added since the backup and is gone now",
		"the key that signs OAuth access tokens was rotated since the backup",
		"restart provisioning in Entra",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("restore does not say %q:\n%s", want, out)
		}
	}
	if strings.Count(out, "\n  ") != 4 {
		t.Errorf("restore lists other resources than the four:\n%s", out)
	}

	// The same backup again: the file it replaces is the backup's copy.
	if out := run("restore", "--from", backup, "--keep=false"); !strings.Contains(out, "held nothing the backup does not") {
		t.Errorf("restored over its own copy, restore says:\n%s", out)
	}
	// Over a data file cut short, it restores and says it cannot tell.
	target := filepath.Join(c.DataDir, "scimrelay.db")
	fi, err := os.Stat(target)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(target, fi.Size()/2); err != nil {
		t.Fatal(err)
	}
	if out := run("restore", "--from", backup, "--keep=false"); !strings.Contains(out, "what changed since the backup is not known: the data file it replaced could not be compared with it (") {
		t.Errorf("restored over a file cut short, restore says:\n%s", out)
	}
	p = startRelay(t, c, roleAll)
	p.scim("acme", acmeToken, "GET", "/Users/"+ann, "").want(t, 200)
}

// TestRestoreNamesAPurgedTenantsCredentials: a tenant purged after the
// backup is back whole in the restored file, its Secret Tokens too, which
// would work again once its name is configured again: restore says to
// purge it again and names each token, rather than listing its users as
// deleted since, to be deleted with a token of a tenant no longer
// configured (from the review of restore's list).
func TestRestoreNamesAPurgedTenantsCredentials(t *testing.T) {
	f := reloadFile{t: t, path: filepath.Join(t.TempDir(), "relay.yaml"), dataDir: t.TempDir()}
	f.write(twoTenants)
	p := startReloadable(t, f.path, io.Discard)
	cfg := cliConfig(t, p, adminSecret)
	run := func(args ...string) string { t.Helper(); return cliOK(t, cfg, args...) }
	gus := p.scim("globex", globexToken, "POST", "/Users", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"gus"}`).want(t, 201).str("id")
	run("token", "create", "--tenant", "globex", "--name", "extra")
	backup := filepath.Join(t.TempDir(), "copy.db")
	run("backup", "--out", backup)
	f.write("tenants:\n  - name: acme\n    tokens: [" + acmeToken + "]\n")
	run("reload")
	run("tenant", "purge", "globex", "--yes")
	p.stop()
	appendDataDir(t, cfg, f.dataDir)
	out := run("restore", "--from", backup)
	for _, want := range []string{
		"tenant globex was purged since the backup, and 1 of its users and groups and its credentials are back: once the relay runs, with globex not in relay.yaml, purge it again (scimrelay tenant purge globex --yes)",
		"token extra of tenant globex (",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("restore does not say %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, gus) {
		t.Errorf("restore lists a user of the purged tenant as deleted since:\n%s", out)
	}
}

// TestBackupCopiedOverARunningRelay: a backup copied over the data file
// while the relay runs (cp writes it in place) is not served as a
// restore, nor crashes the relay (bbolt panicked on the next commit): the
// next write is refused with 503 and the relay stops, saying why; started
// again, it serves the copy.
func TestBackupCopiedOverARunningRelay(t *testing.T) {
	p, c, _, backup := relayWithABackup(t)
	copied, err := os.ReadFile(backup)
	if err != nil {
		t.Fatal(err)
	}
	disktest.WriteInPlace(t, c.DBPath(), copied)
	r := p.scim("acme", acmeToken, "POST", "/Users", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"cy"}`)
	if r.status != 503 || !strings.Contains(r.str("detail"), "could not write its data file") {
		t.Fatalf("a write after the copy: %d %s", r.status, r.raw)
	}
	select {
	case err := <-p.done:
		p.cancel = nil
		if !errors.Is(err, relay.ErrWritesStopped) || !errors.Is(err, relay.ErrFileReplaced) {
			t.Fatalf("the relay stopped with %v, want the file replaced", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the relay went on after its data file was replaced")
	}
	p = startRelay(t, c, roleAll)
	if n := userCount(t, p); n != "1" {
		t.Fatalf("started again, the relay has %s users, want ann alone", n)
	}
}

// stoppedDataFile makes a data file, as a relay that stopped leaves it, a
// backup of it, and the relay.yaml that restore and compact read.
func stoppedDataFile(t *testing.T) (target, backup, cfg string) {
	t.Helper()
	dataDir := t.TempDir()
	target = testConfig(t, dataDir).DBPath()
	s, err := relay.Open(target, relay.Options{})
	if err != nil {
		t.Fatal(err)
	}
	_ = s.Close()
	data, err := os.ReadFile(target)
	if err != nil {
		t.Fatal(err)
	}
	backup = filepath.Join(t.TempDir(), "copy.db")
	if err := os.WriteFile(backup, data, 0o600); err != nil {
		t.Fatal(err)
	}
	cfg = filepath.Join(t.TempDir(), "relay.yaml")
	if err := os.WriteFile(cfg, []byte("data_dir: "+dataDir+"\ntenants:\n  - name: acme\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return target, backup, cfg
}

// TestRestoreReplacesADamagedDataFile: a damaged data file is what a
// restore is for. It was refused ("invalid database", or for an empty
// file "bad file descriptor"): the data file's lock was taken by opening
// it with bbolt. The damaged file is kept beside the copy.
func TestRestoreReplacesADamagedDataFile(t *testing.T) {
	for name, damage := range map[string]func(path string) error{
		"meta pages overwritten": func(path string) error {
			f, err := os.OpenFile(path, os.O_WRONLY, 0)
			if err != nil {
				return err
			}
			defer f.Close()
			_, err = f.WriteAt([]byte(strings.Repeat("\xa5", 8192)), 0)
			return err
		},
		"empty": func(path string) error { return os.Truncate(path, 0) },
	} {
		t.Run(name, func(t *testing.T) {
			target, backup, cfg := stoppedDataFile(t)
			if err := damage(target); err != nil {
				t.Fatal(err)
			}
			code, out, stderr := cli(t, "restore", "--from", backup, "--config", cfg)
			kept, found := strings.CutPrefix(strings.Split(out, "\n")[1], "the data file it replaced is kept at ")
			if code != exitOK || !found {
				t.Fatalf("restore over a damaged data file: %d\n%s\n%s", code, out, stderr)
			}
			if err := relay.CheckCopy(target); err != nil {
				t.Fatalf("the data file after the restore: %v", err)
			}
			if relay.CheckCopy(kept) == nil {
				t.Fatalf("the file kept, %s, is not the damaged one", kept)
			}
		})
	}
}

// TestRestoreRefusesWhatIsNotABackup: an empty backup (kubectl exec
// without -i gives an empty stdin) is refused as empty, not with bbolt's
// "bad file descriptor" that pointed at the data disk; a directory given
// to --from is bad usage, naming it.
func TestRestoreRefusesWhatIsNotABackup(t *testing.T) {
	target, _, cfg := stoppedDataFile(t)
	empty := filepath.Join(t.TempDir(), "empty.db")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if code, _, stderr := cli(t, "restore", "--from", empty, "--config", cfg); code != exitError || !strings.Contains(stderr, "is not a backup this relay can restore (nothing was changed): it is empty (0 bytes)") {
		t.Errorf("restore of an empty backup: %d %s", code, stderr)
	}
	dir := t.TempDir()
	if code, _, stderr := cli(t, "restore", "--from", dir, "--config", cfg); code != exitUsage || !strings.Contains(stderr, "--from "+dir+": a directory, not a backup file") {
		t.Errorf("restore --from a directory: %d %s", code, stderr)
	}
	if err := relay.CheckCopy(target); err != nil {
		t.Fatalf("the data file after the refused restores: %v", err)
	}
}

// TestRestoreRefusesADamagedBackup: a copy of the right length with a page
// it uses damaged (a disk or a transfer error) is refused by the check
// backup, restore and compact make, never a panic; a restore of it
// changes nothing. The check read only the meta pages: such a backup was
// restored, and the relay panicked at its start on it, or the check
// itself panicked with a Go stack trace (the backup review).
func TestRestoreRefusesADamagedBackup(t *testing.T) {
	target, _, cfg := stoppedDataFile(t)
	_, _, _, backup := relayWithABackup(t) // a user, tokens, keys: pages of several buckets
	whole, err := os.ReadFile(backup)
	if err != nil {
		t.Fatal(err)
	}
	before, err := os.ReadFile(target)
	if err != nil {
		t.Fatal(err)
	}
	db, err := bolt.Open(backup, 0o600, &bolt.Options{ReadOnly: true, PreLoadFreelist: true}) // tx.Page reads it
	if err != nil {
		t.Fatal(err)
	}
	var used []int // the leaf and branch pages the file uses
	size := db.Info().PageSize
	_ = db.View(func(tx *bolt.Tx) error {
		for id := 2; (id+1)*size <= len(whole); id++ {
			if p, err := tx.Page(id); err == nil && p != nil && (p.Type == "leaf" || p.Type == "branch") {
				used = append(used, id)
			}
		}
		return nil
	})
	_ = db.Close()
	if len(used) < 3 {
		t.Fatalf("the backup uses %d pages", len(used))
	}
	damaged := filepath.Join(t.TempDir(), "damaged.db")
	for _, id := range used {
		d := slices.Clone(whole)
		clear(d[id*size : (id+1)*size])
		if err := os.WriteFile(damaged, d, 0o600); err != nil {
			t.Fatal(err)
		}
		func() {
			defer func() {
				if r := recover(); r != nil {
					t.Errorf("page %d zeroed: the check panicked: %v", id, r)
				}
			}()
			if err := relay.CheckCopy(damaged); err == nil {
				t.Errorf("page %d zeroed: the check took the copy", id)
			}
		}()
		if id == used[len(used)/2] {
			if code, _, stderr := cli(t, "restore", "--from", damaged, "--config", cfg); code != exitError || !strings.Contains(stderr, "nothing was changed") {
				t.Errorf("restore of a copy with page %d zeroed: %d %s", id, code, stderr)
			}
		}
	}
	if after, err := os.ReadFile(target); err != nil || !bytes.Equal(after, before) {
		t.Fatalf("the refused restore changed the data file (%v)", err)
	}
}

// TestRestoreNewThroughALinkToANewVolume: where scimrelay.db is a symbolic
// link to a file that does not exist yet (a new, empty volume), restore
// --new (which the refusal without it advises) puts the copy in the file
// the link names and keeps the link, where serve makes the data file. It
// replaced the link with a file in data_dir, and the relay ran off the
// root volume (the backup review).
func TestRestoreNewThroughALinkToANewVolume(t *testing.T) {
	_, _, _, backup := relayWithABackup(t)
	dataDir := t.TempDir()
	real := filepath.Join(t.TempDir(), "scimrelay.db")
	target := filepath.Join(dataDir, "scimrelay.db")
	if err := os.Symlink(real, target); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(t.TempDir(), "relay.yaml")
	if err := os.WriteFile(cfg, []byte("data_dir: "+dataDir+"\ntenants:\n  - name: acme\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if code, out, stderr := cli(t, "restore", "--from", backup, "--new", "--config", cfg); code != exitOK {
		t.Fatalf("restore --new: %d %s %s", code, out, stderr)
	}
	if fi, err := os.Lstat(target); err != nil || fi.Mode()&os.ModeSymlink == 0 {
		t.Errorf("after restore --new, %s is not the link (%v)", target, err)
	}
	if err := relay.CheckCopy(real); err != nil {
		t.Errorf("the file the link names holds no restored copy: %v", err)
	}
}

// TestRestoreAndCompactThroughASymlink: where the data file's path is a
// symbolic link (the file on another volume), restore and compact replace
// the file it names and keep the link; they replaced the link with a
// regular file in data_dir, leaving the file the relay served as it was
// (a link put back would serve it, losing what was written since).
func TestRestoreAndCompactThroughASymlink(t *testing.T) {
	target, backup, cfg := stoppedDataFile(t)
	real := filepath.Join(t.TempDir(), "real.db")
	if err := os.Rename(target, real); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(real, target); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"restore", "--from", backup, "--keep=false"}, {"compact"}} {
		before, err := os.Stat(real)
		if err != nil {
			t.Fatal(err)
		}
		if code, out, stderr := cli(t, append(args, "--config", cfg)...); code != exitOK || !strings.Contains(out, real) {
			t.Fatalf("%s: %d\n%s\n%s", args[0], code, out, stderr)
		}
		fi, err := os.Lstat(target)
		if err != nil || fi.Mode()&os.ModeSymlink == 0 {
			t.Fatalf("after %s, %s is %v (%v); want the link kept", args[0], target, fi.Mode(), err)
		}
		after, err := os.Stat(real)
		if err != nil || os.SameFile(before, after) {
			t.Fatalf("%s left %s, the file the link names, as it was (%v)", args[0], real, err)
		}
	}
}

// TestRelayStartedWhileTheBackupArrives: the restore copies and checks
// the backup before it takes the data file's lock, so a relay started
// while a backup arrives on stdin (minutes, through kubectl exec -i) opens
// the data file as it was, and the restore then refuses, changing nothing;
// it held the lock throughout before, and the relay gave up after a
// second, saying another process held the file.
func TestRelayStartedWhileTheBackupArrives(t *testing.T) {
	target, backup, cfg := stoppedDataFile(t)
	data, err := os.ReadFile(backup)
	if err != nil {
		t.Fatal(err)
	}
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	stdin := os.Stdin
	os.Stdin = r
	t.Cleanup(func() { os.Stdin = stdin })
	type result struct {
		code           int
		stdout, stderr string
	}
	restored := make(chan result, 1)
	go func() {
		code, out, stderr := cli(t, "restore", "--from", "-", "--config", cfg)
		restored <- result{code, out, stderr}
	}()
	if _, err := w.Write(data[:len(data)/2]); err != nil {
		t.Fatal(err)
	}
	// Half the backup is beside the data file.
	eventstest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		staged, _ := filepath.Glob(filepath.Join(filepath.Dir(target), ".scimrelay-restore-*"))
		if len(staged) != 1 {
			return errors.New("the restore has not begun its copy")
		}
		if fi, err := os.Stat(staged[0]); err != nil || fi.Size() < int64(len(data)/2) {
			return fmt.Errorf("the copy has not half the backup yet (%v)", err)
		}
		return nil
	})
	s, err := relay.Open(target, relay.Options{})
	if err != nil {
		t.Fatalf("a relay started while the backup arrives: %v", err)
	}
	defer s.Close()
	if _, err := w.Write(data[len(data)/2:]); err != nil {
		t.Fatal(err)
	}
	_ = w.Close()
	res := <-restored
	if res.code != exitError || !strings.Contains(res.stderr, "it started while the backup was copied") || !strings.Contains(res.stderr, "nothing was changed") {
		t.Fatalf("the restore, the relay started meanwhile: %d %s %s", res.code, res.stdout, res.stderr)
	}
	if staged, _ := filepath.Glob(filepath.Join(filepath.Dir(target), ".scimrelay-*")); len(staged) != 0 {
		t.Fatalf("the refused restore left %v", staged)
	}
}

// TestRestoreKeepsTheDataFilesOwner: a restore run as root (sudo, as the
// systemd README runs the CLI) for a relay that runs as its own user
// leaves the data file with that user as owner; before, it was root's,
// mode 0600, and the service could not open it. With --new, on a machine
// whose data_dir the service's user owns (systemd's StateDirectory) and
// which holds no data file yet, the copy gets the directory's owner.
func TestRestoreKeepsTheDataFilesOwner(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to give a file to another user")
	}
	const uid, gid = 4242, 4343
	target, backup, cfg := stoppedDataFile(t)
	if err := os.Chown(target, uid, gid); err != nil {
		t.Fatal(err)
	}
	if code, out, stderr := cli(t, "restore", "--from", backup, "--config", cfg); code != exitOK {
		t.Fatalf("restore: %d %s %s", code, out, stderr)
	}
	fi, err := os.Stat(target)
	if err != nil {
		t.Fatal(err)
	}
	if st := fi.Sys().(*syscall.Stat_t); st.Uid != uid || st.Gid != gid || fi.Mode().Perm() != 0o600 {
		t.Fatalf("the restored data file is uid %d gid %d mode %v, want %d %d -rw-------", st.Uid, st.Gid, fi.Mode().Perm(), uid, gid)
	}

	newDir := t.TempDir()
	if err := os.Chown(newDir, uid, gid); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cfg, []byte("data_dir: "+newDir+"\ntenants:\n  - name: acme\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if code, out, stderr := cli(t, "restore", "--from", backup, "--new", "--config", cfg); code != exitOK {
		t.Fatalf("restore --new: %d %s %s", code, out, stderr)
	}
	fi, err = os.Stat(filepath.Join(newDir, "scimrelay.db"))
	if err != nil {
		t.Fatal(err)
	}
	if st := fi.Sys().(*syscall.Stat_t); st.Uid != uid || st.Gid != gid || fi.Mode().Perm() != 0o600 {
		t.Fatalf("restored with --new, the data file is uid %d gid %d mode %v, want the directory's owner %d %d, -rw-------", st.Uid, st.Gid, fi.Mode().Perm(), uid, gid)
	}
}

// TestRestoreWhereThereIsNoDataFile: a restore that finds no data file to
// replace (run from another directory than serve, whose relative data_dir
// then names another place) is refused, saying where it looked, and makes
// nothing; with --new, for a machine that has none yet, it restores.
func TestRestoreWhereThereIsNoDataFile(t *testing.T) {
	_, _, _, backup := relayWithABackup(t)
	dataDir := filepath.Join(t.TempDir(), "data")
	cfg := filepath.Join(t.TempDir(), "relay.yaml")
	if err := os.WriteFile(cfg, []byte("data_dir: "+dataDir+"\ntenants:\n  - name: acme\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	target := filepath.Join(dataDir, "scimrelay.db")
	code, _, stderr := cli(t, "restore", "--from", backup, "--config", cfg)
	if code != exitUsage || !strings.Contains(stderr, "there is no data file at "+target+" to replace") || !strings.Contains(stderr, "--new") {
		t.Fatalf("restore onto no data file: %d %s", code, stderr)
	}
	if _, err := os.Stat(dataDir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the refused restore made %s (%v)", dataDir, err)
	}
	if code, out, stderr := cli(t, "restore", "--from", backup, "--new", "--config", cfg); code != exitOK || !strings.Contains(out, "restored "+backup+" to "+target) {
		t.Fatalf("restore --new: %d %s %s", code, out, stderr)
	}
	if err := relay.CheckCopy(target); err != nil {
		t.Fatal(err)
	}
}

// TestHoldDataFileIsTheRelaysLock: the lock a restore takes to put its
// copy in place (holdDataFile, a plain flock, so that a damaged data file
// does not stop it) is the lock the relay takes: a relay started while it
// is held waits for it, here past its second, and is refused; released, it
// opens. Another lock (an fcntl one, a lock file) would let the relay run
// on the file the restore replaces.
func TestHoldDataFileIsTheRelaysLock(t *testing.T) {
	target, _, _ := stoppedDataFile(t)
	held, err := holdDataFile(target)
	if err != nil {
		t.Fatal(err)
	}
	if s, err := relay.Open(target, relay.Options{}); !errors.Is(err, relay.ErrInUse) {
		if err == nil {
			_ = s.Close()
		}
		t.Fatalf("a relay started while a restore holds the data file: %v, want %v", err, relay.ErrInUse)
	}
	_ = held.Close()
	s, err := relay.Open(target, relay.Options{})
	if err != nil {
		t.Fatalf("the lock released, the relay: %v", err)
	}
	_ = s.Close()
}

// stagedCopies lists the copies restore, compact and backup stage in dir
// (a data directory) while they work, with their sizes.
func stagedCopies(t *testing.T, dir string) map[string]int64 {
	t.Helper()
	found := map[string]int64{}
	for _, pattern := range []string{stagedRestore, stagedCompact, stagedBackup} {
		names, _ := filepath.Glob(filepath.Join(dir, pattern))
		for _, n := range names {
			if fi, err := os.Stat(n); err == nil {
				found[filepath.Base(n)] = fi.Size()
			}
		}
	}
	return found
}

// TestKilledRestoreLeavesNoCopyBehind: a restore killed while the backup
// arrives (SIGKILL: a second Ctrl-C, a container stopped past its grace,
// the OOM killer) changes nothing, as README promises; but the copy it was
// staging beside the data file must not stay there for good, taking the
// data volume's room, after the operator restores again and starts the
// relay.
func TestKilledRestoreLeavesNoCopyBehind(t *testing.T) {
	p, c, cfg, backup := relayWithABackup(t)
	p.stop()
	data, err := os.ReadFile(backup)
	if err != nil {
		t.Fatal(err)
	}
	before, err := os.ReadFile(c.DBPath())
	if err != nil {
		t.Fatal(err)
	}

	cmd := exec.Command(binary(t), "restore", "--from", "-", "--config", cfg)
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	half := len(data) / 2
	if _, err := in.Write(data[:half]); err != nil {
		t.Fatal(err)
	}
	eventstest.CheckFor(t, 30*time.Second, 5*time.Millisecond, func() error {
		for _, size := range stagedCopies(t, c.DataDir) {
			if size == int64(half) {
				return nil
			}
		}
		return fmt.Errorf("the restore has not staged half the backup yet: %v", stagedCopies(t, c.DataDir))
	})
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()

	if after, err := os.ReadFile(c.DBPath()); err != nil || !bytes.Equal(after, before) {
		t.Fatalf("a restore killed while the backup arrived changed the data file (%v)", err)
	}
	// The operator restores again, and starts the relay on the result.
	if code, out, errOut := cli(t, "restore", "--from", backup, "--keep=false", "--config", cfg); code != exitOK {
		t.Fatalf("restore after one killed: %d\n%s\n%s", code, out, errOut)
	}
	p = startRelay(t, c, roleAll)
	if n := userCount(t, p); n != "1" {
		t.Fatalf("the relay restored has %s users, want the backup's one", n)
	}
	p.stop()
	if left := stagedCopies(t, c.DataDir); len(left) != 0 {
		t.Fatalf("after a restore killed, a restore done and a start, the data directory still holds %v: a copy of the backup nothing removes or mentions", left)
	}
}

// TestStartRemovesTheCopiesOfKilledCommands: a compact or a backup killed
// (SIGKILL) leaves its copy beside the data file, unlocked, as large as
// the file; the relay's start removes each and logs it, and leaves the
// copy of a restore still running (it holds its copy's lock; the restore
// is then refused, the relay holding the data file); so does compact. A compact killed at
// a chosen point cannot be arranged from outside the process (it holds
// the data file's lock throughout): the copies are made as it makes
// them; TestKilledRestoreLeavesNoCopyBehind kills a restore.
func TestStartRemovesTheCopiesOfKilledCommands(t *testing.T) {
	c := testConfig(t, t.TempDir())
	startRelay(t, c, roleAll).stop()
	stage := func(pattern string) string {
		f, err := os.CreateTemp(c.DataDir, pattern)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if _, err := f.Write(make([]byte, 1<<20)); err != nil {
			t.Fatal(err)
		}
		return filepath.Base(f.Name())
	}
	compacted, backedUp, restoring := stage(stagedCompact), stage(stagedBackup), stage(stagedRestore)
	held, err := holdStaged(filepath.Join(c.DataDir, restoring))
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	p, log := startRelayLogging(t, c)
	p.stop()
	if left := stagedCopies(t, c.DataDir); len(left) != 1 || left[restoring] == 0 {
		t.Errorf("after the start the data directory holds %v, want only the running restore's %s", left, restoring)
	}
	for _, name := range []string{compacted, backedUp} {
		if !strings.Contains(log.String(), name) {
			t.Errorf("the start does not log the removal of %s:\n%s", name, log.String())
		}
	}
	// compact, run again after one killed, removes its copy first, which
	// would take the room its own needs.
	target, _, cfg := stoppedDataFile(t)
	f, err := os.CreateTemp(filepath.Dir(target), stagedCompact)
	if err != nil {
		t.Fatal(err)
	}
	_ = f.Close()
	code, out, stderr := cli(t, "compact", "--config", cfg)
	if left := stagedCopies(t, filepath.Dir(target)); code != exitOK || len(left) != 0 || !strings.Contains(stderr, "removed "+f.Name()) {
		t.Errorf("compact after one killed: exit %d, copies left %v\n%s\n%s", code, left, out, stderr)
	}
}

// TestCompactRemovesAKilledBackupsCopyWhereTheDataFileIsALink (review 3):
// scimrelay.db is a symbolic link to the file on another volume (README:
// compact and restore work on the file it names, beside itself). A backup
// to stdout where $TMPDIR cannot be written stages its copy in data_dir
// (createStaging), beside the link; killed, it leaves it there. README:
// "the copy a compact, a restore or a backup to stdout staged in data_dir
// and left when killed ... is removed by the relay's next start ... and by
// the next compact".
func TestCompactRemovesAKilledBackupsCopyWhereTheDataFileIsALink(t *testing.T) {
	target, _, cfg := stoppedDataFile(t)
	dataDir := filepath.Dir(target)
	real := filepath.Join(t.TempDir(), "scimrelay.db") // the other volume
	if err := os.Rename(target, real); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(real, target); err != nil {
		t.Fatal(err)
	}
	t.Setenv("TMPDIR", filepath.Join(t.TempDir(), "read-only-root")) // not there: cannot be written
	f, err := createStaging(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(make([]byte, 1<<20)); err != nil {
		t.Fatal(err)
	}
	_ = f.Close() // the backup is killed here: nothing removes it
	code, out, stderr := cli(t, "compact", "--config", cfg)
	if code != exitOK {
		t.Fatalf("compact: %d\n%s\n%s", code, out, stderr)
	}
	for _, dir := range []string{dataDir, filepath.Dir(real)} {
		if left := stagedCopies(t, dir); len(left) != 0 {
			t.Errorf("after compact, %s still holds %v, the copy a killed backup left\n%s", dir, left, stderr)
		}
	}
}

// SPDX-License-Identifier: Apache-2.0

package main

import (
	"time"

	"github.com/scimrelay/scimrelay/cmd/scimrelay/internal/admin"
	"github.com/scimrelay/scimrelay/cmd/scimrelay/internal/httpmw"
)

// The server options only tests pass (serverOption).

// withClock makes the store read the time from now, so that a test can
// expire tokens without waiting.
func withClock(now func() time.Time) serverOption { return func(s *server) { s.now = now } }

// withTokenLimits replaces the limits of wrong admin tokens, for a test
// that sends more of them than an attacker may.
func withTokenLimits(perAddress, overall httpmw.Limit) serverOption {
	return func(s *server) { s.tokenAttempts = admin.NewTokenAttempts(perAddress, overall, s.log) }
}

// withAdminReadTimeout shortens the time a request on the admin listener
// may take to be read.
func withAdminReadTimeout(d time.Duration) serverOption {
	return func(s *server) { s.adminReadTimeout = d }
}

// withMarkerAge shortens how old the parking buckets' markers grow before
// their partition's owner removes them.
func withMarkerAge(d time.Duration) serverOption {
	return func(s *server) { s.markerAge = d }
}

// withKeyWait shortens how long a worker waits for the event stream to
// name the key of an event before dead-lettering it.
func withKeyWait(d time.Duration) serverOption {
	return func(s *server) { s.keyWait = d }
}

// withKeyCheck shortens how often a front end that signs checks that the
// event stream names its key.
func withKeyCheck(d time.Duration) serverOption {
	return func(s *server) { s.keyCheck = d }
}

// withMaxReload shortens the time a reload may take.
func withMaxReload(d time.Duration) serverOption {
	return func(s *server) { s.maxReload = d }
}

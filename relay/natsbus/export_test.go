// SPDX-License-Identifier: Apache-2.0

package natsbus

// SetPassRates sets how many requests and acknowledgements a second the
// passers e starts from now on pass on for each subscriber, so that a test
// sees a limit at work at a rate that any machine, under the race
// detector too, outruns.
func SetPassRates(e *Embedded, requests, acks int) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.rates = passRates{requests: requests, acks: acks}
}

// SPDX-License-Identifier: Apache-2.0

//go:build !race

package main

// raceDetector reports whether the tests run with -race.
const raceDetector = false

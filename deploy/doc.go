// SPDX-License-Identifier: Apache-2.0

// Package deploy holds no code. Its tests check the deployment files beside
// them (Dockerfile and .dockerignore, compose.yaml, the Helm chart, the
// systemd unit) against the scimrelay they deploy: every command line they
// run is one the binary accepts, every relay.yaml they carry is one it
// validates, and every manifest decodes strictly into its Kubernetes type.
//
// The tests live in a package of their own so that the Helm, Kubernetes and
// Compose libraries they use stay out of the scimrelay binary and out of
// cmd/scimrelay's test build.
package deploy

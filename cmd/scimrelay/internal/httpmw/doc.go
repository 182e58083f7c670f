// SPDX-License-Identifier: Apache-2.0

// Package httpmw holds the SCIM listener's HTTP concerns that are not the
// protocol: the per-tenant rate limiter and the request metrics. scim calls
// them through its Limiter interface and Observe hook.
package httpmw

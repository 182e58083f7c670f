// SPDX-License-Identifier: Apache-2.0

package natsbus

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"
)

// TestCannotUpdate: only JetStream's refusals of a setting it does not
// update remake a consumer; every other error, of the same generic code
// too, leaves it. The refusals are built as nats-server builds them
// (checkNewConsumerConfig's errors in NewJSConsumerCreateError).
func TestCannotUpdate(t *testing.T) {
	refusal := func(description string) error {
		e := server.NewJSConsumerCreateError(errors.New(description))
		return fmt.Errorf("updating: %w", &jetstream.APIError{Code: e.Code, ErrorCode: jetstream.ErrorCode(e.ErrCode), Description: e.Description})
	}
	apiErr := func(e *server.ApiError) error {
		return &jetstream.APIError{Code: e.Code, ErrorCode: jetstream.ErrorCode(e.ErrCode), Description: e.Description}
	}
	for _, tt := range []struct {
		name string
		err  error
		want bool
	}{
		{"ack policy", refusal("ack policy can not be updated"), true},
		{"replay policy", refusal("replay policy can not be updated"), true},
		{"storage type", refusal("storage type can not be updated"), true},
		{"max waiting", refusal("max waiting can not be updated"), true},
		{"deliver policy", refusal("deliver policy can not be updated"), true},
		{"push to pull", refusal("can not update push consumer to pull based"), true},
		{"pull to push", refusal("can not update pull consumer to push based"), true},
		{"a store failing, same code", refusal("write /data/jetstream/SCIMRELAY/obs/billing/meta.inf: no space left on device"), false},
		{"JetStream unavailable", apiErr(server.NewJSClusterNotAvailError()), false},
		{"insufficient resources", apiErr(server.NewJSInsufficientResourcesError()), false},
		{"a stream limit", apiErr(server.NewJSConsumerMaxPendingAckExcessError(100)), false},
		{"consumer gone meanwhile", apiErr(server.NewJSConsumerDoesNotExistError()), false},
		{"a timeout", fmt.Errorf("updating: %w", context.DeadlineExceeded), false},
		{"no answer", jetstream.ErrNoHeartbeat, false},
		{"nil", nil, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := cannotUpdate(tt.err); got != tt.want {
				t.Fatalf("cannotUpdate(%v) = %v, want %v", tt.err, got, tt.want)
			}
		})
	}
}

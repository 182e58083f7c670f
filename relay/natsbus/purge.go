// SPDX-License-Identifier: Apache-2.0

package natsbus

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// PurgeSubject deletes the messages of a stream whose subjects match
// filter, and returns how many it deleted: JetStream's purge answers with
// the count, which nats.go's Stream.Purge does not pass on. A stream that
// does not exist holds none. A refusal is a *jetstream.APIError.
func PurgeSubject(ctx context.Context, nc *nats.Conn, stream, filter string) (uint64, error) {
	req, err := json.Marshal(server.JSApiStreamPurgeRequest{Subject: filter})
	if err != nil {
		return 0, err
	}
	msg, err := nc.RequestWithContext(ctx, fmt.Sprintf(server.JSApiStreamPurgeT, stream), req)
	if err != nil {
		return 0, fmt.Errorf("purging %s from stream %s: %w", filter, stream, err)
	}
	var res server.JSApiStreamPurgeResponse
	if err := json.Unmarshal(msg.Data, &res); err != nil {
		return 0, fmt.Errorf("purging %s from stream %s: reading the answer: %w", filter, stream, err)
	}
	if e := res.Error; e != nil {
		if e.ErrCode == uint16(server.JSStreamNotFoundErr) {
			return 0, nil
		}
		return 0, fmt.Errorf("purging %s from stream %s: %w", filter, stream,
			&jetstream.APIError{Code: e.Code, ErrorCode: jetstream.ErrorCode(e.ErrCode), Description: e.Description})
	}
	return res.Purged, nil
}

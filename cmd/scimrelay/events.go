// SPDX-License-Identifier: Apache-2.0

package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net/url"
	"strconv"

	"github.com/spf13/cobra"
)

func init() { subcommands = append(subcommands, newEventsCommand) }

func newEventsCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:     "events",
		Short:   "Read the event stream",
		Example: "  scimrelay events tail --tenant acme --since 10m",
	}
	var tenant, typ, since string
	var fromSeq uint64
	var noFollow bool
	tail := &cobra.Command{
		Use:   "tail",
		Short: "Print events as they happen, one CloudEvent (structured JSON) per line",
		Long: `Print events from the SCIMRELAY stream, one structured-mode CloudEvent JSON
per line. Without --since or --from-seq it starts with the next event; it
follows the stream until interrupted unless --no-follow is given.`,
		Example: `  scimrelay events tail
  scimrelay events tail --tenant acme --type 'user.*' --since 10m
  scimrelay events tail --tenant acme --from-seq 1200 --no-follow | jq .type`,
		Args: positional(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			// --from-seq 0 is a start given (every event, as from_seq=0
			// is to the API), not the flag left out.
			seqGiven := cmd.Flags().Changed("from-seq")
			if since != "" && seqGiven {
				return usageError{errors.New("--since and --from-seq exclude each other")}
			}
			if seqGiven && tenant == "" {
				return usageError{errors.New("--from-seq counts a tenant's events: give --tenant too")}
			}
			c, err := adminClientOf(cmd)
			if err != nil {
				return err
			}
			// A removed tenant's events are read until they age out.
			unknown, err := heldFilters(cmd.Context(), c, tenant, "")
			if err != nil {
				return err
			}
			q := url.Values{}
			for k, v := range map[string]string{"tenant": tenant, "type": typ, "since": since} {
				if v != "" {
					q.Set(k, v)
				}
			}
			if seqGiven {
				q.Set("from_seq", strconv.FormatUint(fromSeq, 10))
			}
			if noFollow {
				q.Set("follow", "false")
			}
			tail, err := c.Tail(cmd.Context(), q)
			if err != nil {
				return answeredFilters(unknown, err)
			}
			defer tail.Close()
			err = copyPrintableJSON(cmd.OutOrStdout(), tail)
			switch {
			case cmd.Context().Err() != nil:
				return nil // interrupted: the normal end of a tail
			case noFollow:
				return err
			case err == nil:
				// The relay ends a followed tail only when it stops.
				return unreachableError{errors.New("the relay ended the event tail: it is stopping")}
			}
			return unreachableError{fmt.Errorf("the relay ended the event tail: %w", err)}
		},
	}
	configFlagOn(tail)
	tail.Flags().StringVar(&tenant, "tenant", "", "only this tenant's events")
	tail.Flags().StringVar(&typ, "type", "", "only events of this type: user.*, group.member_added, ...")
	tail.Flags().StringVar(&since, "since", "", "start this long ago, e.g. 10m or 2h")
	tail.Flags().Uint64Var(&fromSeq, "from-seq", 0, "start at this event sequence of the tenant")
	tail.Flags().BoolVar(&noFollow, "no-follow", false, "stop once caught up")
	cmd.AddCommand(tail)
	return cmd
}

// copyPrintableJSON copies lines of JSON from r to w as each arrives,
// each one printable (printableJSON).
func copyPrintableJSON(w io.Writer, r io.Reader) error {
	br := bufio.NewReader(r)
	for {
		line, err := br.ReadBytes('\n')
		if len(line) > 0 {
			if _, werr := w.Write(printableJSON(line)); werr != nil {
				return werr
			}
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

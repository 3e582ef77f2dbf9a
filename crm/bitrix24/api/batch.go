package api

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"strings"

	"github.com/pbxbridge/pbxbridge/crm/internal/httpclient"
)

// MaxBatch is the largest number of commands in one batch (A.7).
const MaxBatch = 50

// BatchCmd is one command of a batch.
type BatchCmd struct {
	Key    string
	Method string
	Params url.Values // PHP-style keys, e.g. FILTER[UF_PHONE_INNER]
}

// BatchResult holds the per-command outcomes of a batch.
type BatchResult struct {
	Result map[string]json.RawMessage
	Errors map[string]*Error
	Total  map[string]int
	Next   map[string]int
}

// Batch runs up to MaxBatch read commands in one request (counted once by the portal's rate
// limit). File uploads must not be batched (A.3.3); commands that change something go through
// BatchWrite.
func (c *Client) Batch(ctx context.Context, cmds []BatchCmd, halt bool) (*BatchResult, error) {
	return c.batch(httpclient.Idempotent(ctx), cmds, halt)
}

// BatchWrite runs up to MaxBatch commands that change something (finish, show, hide) in one
// request, without halting at an error (each command's outcome is in the result). Unlike Batch
// it is not repeated after an ambiguous failure: a finish sent twice answers "Call is not found"
// the second time, so the caller must find out what happened (see FindStatistic).
func (c *Client) BatchWrite(ctx context.Context, cmds []BatchCmd) (*BatchResult, error) {
	return c.batch(ctx, cmds, false)
}

func (c *Client) batch(ctx context.Context, cmds []BatchCmd, halt bool) (*BatchResult, error) {
	if len(cmds) == 0 {
		return &BatchResult{}, nil
	}
	if len(cmds) > MaxBatch {
		return nil, fmt.Errorf("batch: %d commands, at most %d allowed", len(cmds), MaxBatch)
	}
	cmd := make(map[string]string, len(cmds))
	for _, bc := range cmds {
		q := bc.Method
		if len(bc.Params) > 0 {
			q += "?" + bc.Params.Encode()
		}
		cmd[bc.Key] = q
	}
	var raw json.RawMessage
	if _, err := c.Call(ctx, "batch", map[string]any{"halt": Flag(halt), "cmd": cmd}, &raw); err != nil {
		return nil, err
	}
	res, err := DecodeBatch(raw)
	if err != nil {
		return nil, err
	}
	for k, e := range res.Errors {
		e.Method = methodOf(cmd[k])
	}
	return res, nil
}

func methodOf(q string) string {
	m, _, _ := strings.Cut(q, "?")
	return m
}

// DecodeBatch decodes a batch result. Each section is an object keyed by command, or [] when
// empty (A.7); both forms are accepted.
func DecodeBatch(raw json.RawMessage) (*BatchResult, error) {
	var sec struct {
		Result      json.RawMessage `json:"result"`
		ResultError json.RawMessage `json:"result_error"`
		ResultTotal json.RawMessage `json:"result_total"`
		ResultNext  json.RawMessage `json:"result_next"`
	}
	if err := json.Unmarshal(raw, &sec); err != nil {
		return nil, fmt.Errorf("batch: decoding result: %w", err)
	}
	out := &BatchResult{Result: map[string]json.RawMessage{}, Errors: map[string]*Error{}, Total: map[string]int{}, Next: map[string]int{}}
	if err := decodeSection(sec.Result, &out.Result); err != nil {
		return nil, fmt.Errorf("batch: decoding result: %w", err)
	}
	var errs map[string]struct {
		Error            String `json:"error"`
		ErrorDescription String `json:"error_description"`
	}
	if err := decodeSection(sec.ResultError, &errs); err != nil {
		return nil, fmt.Errorf("batch: decoding result_error: %w", err)
	}
	for k, e := range errs {
		out.Errors[k] = &Error{Status: 200, Code: string(e.Error), Description: string(e.ErrorDescription)}
	}
	var ints map[string]Int
	if err := decodeSection(sec.ResultTotal, &ints); err != nil {
		return nil, fmt.Errorf("batch: decoding result_total: %w", err)
	}
	for k, v := range ints {
		out.Total[k] = int(v)
	}
	ints = nil
	if err := decodeSection(sec.ResultNext, &ints); err != nil {
		return nil, fmt.Errorf("batch: decoding result_next: %w", err)
	}
	for k, v := range ints {
		out.Next[k] = int(v)
	}
	return out, nil
}

// decodeSection decodes an object section; an absent, null or array section is empty (an array
// with elements is keyed by index, as when cmd was an array).
func decodeSection[T any](raw json.RawMessage, dst *map[string]T) error {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return nil
	}
	if raw[0] == '[' {
		var arr []T
		if err := json.Unmarshal(raw, &arr); err != nil {
			return err
		}
		if *dst == nil && len(arr) > 0 {
			*dst = map[string]T{}
		}
		for i, v := range arr {
			(*dst)[fmt.Sprint(i)] = v
		}
		return nil
	}
	m := map[string]T{}
	if err := json.Unmarshal(raw, &m); err != nil {
		return err
	}
	if *dst == nil {
		*dst = m
		return nil
	}
	for k, v := range m {
		(*dst)[k] = v
	}
	return nil
}

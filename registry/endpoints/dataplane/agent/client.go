package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
)

// Client calls one agent's API, for lastcall-controller and tests.
type Client struct {
	// URL is the agent's base URL, such as http://10.0.0.7:9902.
	URL   string
	Token string
	HTTP  *http.Client
}

// StatusError is an answer other than 200. Answer is set for 503 (the ruleset could not be
// read); Message is the error otherwise.
type StatusError struct {
	Code    int
	Message string
	Answer  *Answer
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("lastcall-node answered %d: %s", e.Code, e.Message)
}

// Wait long-polls /v1/wait; use a ctx longer than req's timeout.
func (c *Client) Wait(ctx context.Context, req WaitRequest) (Answer, error) {
	return c.post(ctx, PathWait, req)
}

// Check asks /v1/check.
func (c *Client) Check(ctx context.Context, req CheckRequest) (Answer, error) {
	return c.post(ctx, PathCheck, req)
}

func (c *Client) post(ctx context.Context, path string, body any) (Answer, error) {
	b, err := json.Marshal(body)
	if err != nil {
		return Answer{}, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimSuffix(c.URL, "/")+path, bytes.NewReader(b))
	if err != nil {
		return Answer{}, fmt.Errorf("lastcall-node URL %q: %w", c.URL, err)
	}
	req.Header.Set("Content-Type", "application/json")
	if c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	hc := c.HTTP
	if hc == nil {
		hc = http.DefaultClient
	}
	resp, err := hc.Do(req)
	if err != nil {
		return Answer{}, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxBodyBytes))
	if err != nil {
		return Answer{}, fmt.Errorf("read lastcall-node's answer: %w", err)
	}
	if resp.StatusCode == http.StatusOK {
		var ans Answer
		if err := json.Unmarshal(data, &ans); err != nil {
			return Answer{}, fmt.Errorf("lastcall-node's answer: %w", err)
		}
		return ans, nil
	}
	se := &StatusError{Code: resp.StatusCode}
	var ans Answer
	if resp.StatusCode == http.StatusServiceUnavailable && json.Unmarshal(data, &ans) == nil {
		se.Answer, se.Message = &ans, ans.Error
		return ans, se
	}
	var e ErrorJSON
	if json.Unmarshal(data, &e) == nil && e.Error != "" {
		se.Message = e.Error
	} else {
		se.Message = strings.TrimSpace(string(data))
	}
	return Answer{}, se
}

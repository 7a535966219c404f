package webhook

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/pgoutbox/pgoutbox/outbox"
)

// Send posts every record and returns once each has been answered, failed, or was held back. See
// [outbox.Sink] and the package documentation for how answers are classified.
//
// Records of one key are posted one after the other, in order; a key stops at its first failure that
// is not permanent (its later records are reported not attempted). Keys run in parallel, up to
// Config.Concurrency requests at once for the whole sink, so a slow key holds at most one request slot. The first
// systemic failure (endpoint down, overloaded, rate limiting) stops the Send from starting more
// requests. A Send cut short by ctx keeps what was answered: delivered records are nil in the
// *outbox.BatchError, unfinished ones are not attempted or unavailable, never a failed attempt.
func (s *Sink) Send(ctx context.Context, batch []outbox.Record) error {
	if len(batch) == 0 {
		return nil
	}
	st := &sendState{errs: make([]error, len(batch)), sem: s.sem, halt: make(chan struct{})}
	var wg sync.WaitGroup
	for _, lane := range lanesOf(batch) {
		wg.Go(func() { s.sendLane(ctx, st, batch, lane) })
	}
	wg.Wait()
	return result(st.errs)
}

// sendState is one Send's shared state.
type sendState struct {
	errs     []error
	sem      chan struct{} // the sink's request slots
	halt     chan struct{} // closed at the first systemic failure
	haltOnce sync.Once
	haltErr  error // set before halt is closed
}

func (st *sendState) stop(err error) {
	st.haltOnce.Do(func() {
		st.haltErr = err
		close(st.halt)
	})
}

// acquire takes a request slot, or says why no request may start.
func (st *sendState) acquire(ctx context.Context) error {
	select {
	case <-st.halt:
		return st.haltErr
	case <-ctx.Done():
		return fmt.Errorf("the send's context ended first: %w", ctx.Err())
	case st.sem <- struct{}{}:
	}
	select {
	case <-st.halt: // both were ready: the halt wins
		<-st.sem
		return st.haltErr
	default:
		return nil
	}
}

// lanesOf groups the batch's indexes by key, in batch order; each record without a key is its own lane.
func lanesOf(batch []outbox.Record) [][]int {
	var lanes [][]int
	laneOf := make(map[string]int, len(batch))
	for i := range batch {
		k := batch[i].Key
		n, ok := laneOf[k]
		if !ok || k == "" {
			n = len(lanes)
			lanes = append(lanes, nil)
			laneOf[k] = n
		}
		lanes[n] = append(lanes[n], i)
	}
	return lanes
}

func (s *Sink) sendLane(ctx context.Context, st *sendState, batch []outbox.Record, lane []int) {
	var held error // why this key's later records are held back
	for _, i := range lane {
		r := &batch[i]
		if held != nil {
			st.errs[i] = outbox.NotAttempted(fmt.Errorf("webhook: message %s not sent: held back behind an earlier message of its key: %v", r.ID, held))
			continue
		}
		if err := st.acquire(ctx); err != nil {
			st.errs[i] = outbox.NotAttempted(fmt.Errorf("webhook: message %s not sent: %v", r.ID, err))
			held = err
			continue
		}
		err := s.post(ctx, r)
		if outbox.IsUnavailable(err) {
			st.stop(err) // before the slot is released: no request starts after a systemic failure
		}
		<-st.sem
		st.errs[i] = err
		if err != nil && !outbox.IsPermanent(err) {
			held = err
		}
	}
}

// result turns per-record results into Send's error: nil when all were delivered; the systemic error
// itself when nothing was delivered and every failure is systemic or not attempted; else a BatchError.
func result(errs []error) error {
	var systemic error
	var wait time.Duration
	delivered, onlySystemic := 0, true
	for _, err := range errs {
		switch {
		case err == nil:
			delivered++
		case errors.Is(err, outbox.ErrNotAttempted):
		case outbox.IsUnavailable(err):
			if systemic == nil {
				systemic = err
			}
			wait = max(wait, outbox.RetryAfterOf(err))
		default:
			onlySystemic = false
		}
	}
	switch {
	case delivered == len(errs):
		return nil
	case delivered == 0 && onlySystemic && systemic != nil:
		return outbox.RetryAfter(systemic, wait)
	}
	return &outbox.BatchError{Errs: errs}
}

// post sends one record and classifies the outcome.
func (s *Sink) post(ctx context.Context, r *outbox.Record) error {
	if err := s.checkRecord(r); err != nil {
		return err
	}
	target, err := s.target(r)
	if err != nil {
		return err
	}
	if !s.cfg.AppendRoute && r.Route != "" {
		s.routeIgnored(r)
	}
	reqCtx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	h := http.Header{}
	body := s.setHeaders(h, r)
	req, err := http.NewRequestWithContext(reqCtx, http.MethodPost, target, bytes.NewReader(body))
	if err != nil {
		return outbox.Permanent(fmt.Errorf("webhook: message %s: build request: %w", r.ID, err))
	}
	req.Header = h
	started := time.Since(s.epoch)
	resp, err := s.client.Do(req)
	if err != nil {
		return s.transportError(ctx, r, started, err)
	}
	snippet, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20)) // let the connection be reused
	_ = resp.Body.Close()
	return s.answer(r, resp, snippet)
}

// routeIgnored logs, once per destination, that records carry a Route the configuration does not use.
func (s *Sink) routeIgnored(r *outbox.Record) {
	k := string(r.Destination) + "\x00route"
	s.mu.Lock()
	first := !s.logged[k]
	s.logged[k] = true
	s.mu.Unlock()
	if first {
		s.log.Info("messages carry a Route, which is not appended to the URL (append_route is off): every message goes to the configured URL",
			zap.String("destination", string(r.Destination)), zap.String("url", s.display))
	}
}

package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/omero-adi/omero-adi/rules"
	"github.com/omero-adi/omero-adi/watcher"
)

// slowSink answers every call after delay, like a database that takes that long, and records
// when each Settled call returned.
type slowSink struct {
	delay time.Duration
	mu    sync.Mutex
	done  map[string]time.Time
}

func (s *slowSink) wait(ctx context.Context) error {
	select {
	case <-time.After(s.delay):
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (s *slowSink) KnownSignature(ctx context.Context, _, _, _ string) (bool, error) {
	return false, s.wait(ctx)
}
func (s *slowSink) Known(ctx context.Context, _, _, _ string) (bool, error) {
	return false, s.wait(ctx)
}
func (s *slowSink) Settled(ctx context.Context, u watcher.Unit) error {
	if err := s.wait(ctx); err != nil {
		return err
	}
	s.mu.Lock()
	s.done[u.Path] = time.Now()
	s.mu.Unlock()
	return nil
}

func (s *slowSink) settledAt(path string) (time.Time, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t, ok := s.done[path]
	return t, ok
}

// runSlowSink measures the watcher (events mode, in this process) in front of a Sink that takes
// -delay (2 s) per call:
//   - drop -> order: files dropped one every -every into a folder with settle -settle; the
//     latency of each is from its write to the return of its Settled call. Reference: settle plus
//     two calls (Known, Settled).
//   - event latency: meanwhile, files dropped into a second folder (settle 1h, so that they stay
//     pending); the latency of each is from its write until Health counts it pending, i.e. until
//     its event was handled while the Sink is busy.
func runSlowSink(args []string) error {
	fs := flag.NewFlagSet("slowsink", flag.ExitOnError)
	delay := fs.Duration("delay", 2*time.Second, "the Sink's time per call")
	settle := fs.Duration("settle", time.Second, "settle of the ordered folder")
	drops := fs.Int("drops", 8, "files dropped into the ordered folder")
	every := fs.Duration("every", 1500*time.Millisecond, "time between two of those drops")
	eventTarget := fs.Duration("event-target", 100*time.Millisecond, "target: median event latency at most this")
	orderSlack := fs.Duration("order-slack", 250*time.Millisecond, "target: median drop -> order at most settle + 2 calls + this")
	fs.Parse(args)

	dir, err := os.MkdirTemp("", "omero-adi-bench-slowsink-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	for _, d := range []string{"orders", "events"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return err
		}
	}
	rule := func(name string, settle time.Duration) rules.Rule {
		return rules.Rule{Name: name, Group: "Bench", Path: filepath.Join(dir, name), User: "bench", Include: []string{"**/*.tif"},
			Settle: settle, Destination: "Dataset:1"}
	}
	set, err := rules.Compile([]rules.Rule{rule("orders", *settle), rule("events", time.Hour)}, dir, nil)
	if err != nil {
		return err
	}
	sink := &slowSink{delay: *delay, done: map[string]time.Time{}}
	log := logrus.New()
	log.SetOutput(io.Discard)
	w, err := watcher.New(watchConfig(watcher.ModeEvents), set, sink, logrus.NewEntry(log))
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	runDone := make(chan error, 1)
	go func() { runDone <- w.Run(ctx) }()
	defer func() {
		cancel()
		<-runDone
	}()
	eventsRoot := filepath.Join(dir, "events")
	rootPending := func() (int, bool) {
		for _, r := range w.Health().Roots {
			if r.Path == eventsRoot {
				return r.Pending, !r.LastScan.IsZero()
			}
		}
		return 0, false
	}
	for deadline := time.Now().Add(time.Minute); ; {
		h := w.Health()
		if h.Roots[0].LastScan.After(time.Time{}) && h.Roots[1].LastScan.After(time.Time{}) {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("start scans not done within a minute")
		}
		time.Sleep(5 * time.Millisecond)
	}

	// the ordered folder: one drop every -every, in the background
	written := make([]time.Time, *drops)
	paths := make([]string, *drops)
	ordersDone := make(chan error, 1)
	go func() {
		for i := range *drops {
			paths[i] = filepath.Join(dir, "orders", fmt.Sprintf("o%03d.tif", i))
			if err := os.WriteFile(paths[i], []byte(strings.Repeat("o", 1000+i)), 0o644); err != nil {
				ordersDone <- err
				return
			}
			written[i] = time.Now()
			time.Sleep(*every)
		}
		ordersDone <- nil
	}()

	// event latency while the Sink is busy with those
	time.Sleep(*settle + *delay/2)
	var events []time.Duration
	for i := 0; i < 2**drops; i++ {
		path := filepath.Join(eventsRoot, fmt.Sprintf("e%03d.tif", i))
		if err := os.WriteFile(path, []byte("event"), 0o644); err != nil {
			return err
		}
		at := time.Now()
		for {
			if n, _ := rootPending(); n > i {
				break
			}
			if time.Since(at) > 30*time.Second {
				return fmt.Errorf("%s not pending after 30s", path)
			}
			time.Sleep(200 * time.Microsecond)
		}
		events = append(events, time.Since(at))
		time.Sleep(300 * time.Millisecond)
	}
	if err := <-ordersDone; err != nil {
		return err
	}
	var orders []time.Duration
	for i, p := range paths {
		deadline := time.Now().Add(time.Minute)
		for {
			if t, ok := sink.settledAt(p); ok {
				orders = append(orders, t.Sub(written[i]))
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("%s not handed over within a minute", p)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	ms := func(d time.Duration) string { return fmt.Sprintf("%d ms", d.Milliseconds()) }
	ev, ord := medianOf(events), medianOf(orders)
	ref := *settle + 2**delay
	fmt.Printf("event latencies: %v\ndrop -> order latencies: %v\n", events, orders)
	summary(fmt.Sprintf("event latency, Sink %v per call and busy", *delay), ms(ev), ev <= *eventTarget,
		"<= "+ms(*eventTarget), fmt.Sprintf("median of %d drops, max %s; drop -> pending in Health", len(events), ms(maxOf(events))))
	summary(fmt.Sprintf("drop -> order, Sink %v per call, settle %v", *delay, *settle), ms(ord), ord <= ref+*orderSlack,
		"<= "+ms(ref+*orderSlack), fmt.Sprintf("median of %d drops, max %s; reference settle + Known + Settled = %s", len(orders), ms(maxOf(orders)), ms(ref)))
	return nil
}

func maxOf(ds []time.Duration) time.Duration {
	var m time.Duration
	for _, d := range ds {
		m = max(m, d)
	}
	return m
}

package integrity

import (
	"context"
	"math/rand/v2"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/omero-adi/omero-adi/retry"
)

// Run checks periodically until ctx ends: the first check after a random part of a tenth of the
// interval (so that agents started together do not check together), then every Interval. Each
// check is paced to spread over about half the interval, at most MaxStatPerS files a second, and
// hashes as Config.Hash says. A failed check is logged and retried at the next interval. With
// Interval 0 it returns at once.
func (c *Checker) Run(ctx context.Context) error {
	if c.cfg.Interval == 0 {
		return nil
	}
	c.log.WithField("interval", c.cfg.Interval).Info("integrity checks started")
	wait := time.Duration(rand.Int64N(int64(c.cfg.Interval/10) + 1))
	for {
		if retry.Sleep(ctx, wait) != nil {
			return nil
		}
		c.periodic(ctx)
		wait = c.cfg.Interval
	}
}

func (c *Checker) periodic(ctx context.Context) {
	n, err := c.d.Store.CountLinks(ctx)
	if err != nil {
		if ctx.Err() == nil {
			c.log.WithError(err).Warn("integrity check")
		}
		return
	}
	rep, err := c.Check(ctx, Options{Hash: c.cfg.Hash, Sample: c.cfg.Sample, MaxCLIStarts: c.cfg.MaxCLIStarts,
		Rate: c.Rate(n)}, nil)
	if err != nil {
		if ctx.Err() == nil {
			c.log.WithError(err).Warn("integrity check")
		}
		return
	}
	c.log.WithField("orders", rep.Orders).WithField("links", rep.Links).WithField("broken", rep.Broken).
		WithField("hashed", rep.Hashed).WithField("seconds", rep.Duration.Seconds()).Info("integrity check done")
}

// Rate is the pace of a periodic check of links recorded links: enough to finish in half the
// interval, at least one a second, at most MaxStatPerS.
func (c *Checker) Rate(links int) int {
	half := c.cfg.Interval.Seconds() / 2
	rate := 1
	if half > 0 {
		rate = max(1, int(float64(links)/half)+1)
	}
	return min(rate, c.cfg.MaxStatPerS)
}

type metrics struct {
	broken  prometheus.Gauge
	checked prometheus.Gauge
	links   prometheus.Counter
	last    prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		broken: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "omero_adi_integrity_broken_orders", Help: "Completed in-place orders whose links the last check found damaged.",
		}),
		checked: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "omero_adi_integrity_checked_links", Help: "Links the last integrity check looked at.",
		}),
		links: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "omero_adi_integrity_links_checked_total", Help: "Links looked at by integrity checks.",
		}),
		last: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "omero_adi_integrity_last_check_timestamp_seconds", Help: "When the last integrity check ended (Unix time).",
		}),
	}
	if reg == nil {
		return m, nil
	}
	for _, col := range []prometheus.Collector{m.broken, m.checked, m.links, m.last} {
		if err := reg.Register(col); err != nil {
			return nil, err
		}
	}
	return m, nil
}

func (m *metrics) record(rep Report) {
	m.broken.Set(float64(rep.Broken))
	m.checked.Set(float64(rep.Links))
	m.links.Add(float64(rep.Links))
	m.last.Set(float64(time.Now().Unix()))
}

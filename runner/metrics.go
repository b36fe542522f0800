package runner

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	running   prometheus.Gauge
	finished  *prometheus.CounterVec
	duration  prometheus.Histogram
	recovered prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		running: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "omero_adi_orders_running", Help: "Orders this agent is processing now.",
		}),
		finished: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "omero_adi_orders_finished_total", Help: "Orders this agent finished, by outcome.",
		}, []string{"outcome"}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "omero_adi_order_duration_seconds", Help: "Time from claim to outcome of finished orders.",
			Buckets: prometheus.ExponentialBuckets(0.01, 4, 12),
		}),
		recovered: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "omero_adi_orders_recovered_total", Help: "Orders with expired leases recovered by this agent.",
		}),
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.running, m.finished, m.duration, m.recovered} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

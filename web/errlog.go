package web

import (
	"sort"
	"sync"
	"time"

	"github.com/sirupsen/logrus"
)

// ErrorLog keeps the last warning or error each part of the agent logged (a logrus hook on the
// agent's logger; the part is the entry's component field), for the queue page.
type ErrorLog struct {
	mu   sync.Mutex
	last map[string]part
}

// part is the last problem of one part.
type part struct {
	Part    string    `json:"part"`
	Level   string    `json:"level"`
	Message string    `json:"message"`
	At      time.Time `json:"at"`
	When    string    `json:"-"`
}

// partNames are how the queue page names the components.
var partNames = map[string]string{"db": "database", "omero": "OMERO", "preprocess": "podman (preprocessing)"}

// NewErrorLog returns an empty ErrorLog.
func NewErrorLog() *ErrorLog { return &ErrorLog{last: map[string]part{}} }

// Levels is the hook's levels: warnings and worse.
func (l *ErrorLog) Levels() []logrus.Level {
	return []logrus.Level{logrus.PanicLevel, logrus.FatalLevel, logrus.ErrorLevel, logrus.WarnLevel}
}

// Fire records e as the last problem of its component.
func (l *ErrorLog) Fire(e *logrus.Entry) error {
	c, _ := e.Data["component"].(string)
	if c == "" {
		c = "agent"
	}
	if n, ok := partNames[c]; ok {
		c = n
	}
	msg := e.Message
	if err, ok := e.Data[logrus.ErrorKey].(error); ok && err != nil {
		msg += ": " + err.Error()
	}
	l.mu.Lock()
	l.last[c] = part{Part: c, Level: e.Level.String(), Message: msg, At: e.Time}
	l.mu.Unlock()
	return nil
}

// Last returns the last problem of each part, by part name.
func (l *ErrorLog) Last() []part {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]part, 0, len(l.last))
	for _, p := range l.last {
		out = append(out, p)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Part < out[j].Part })
	return out
}

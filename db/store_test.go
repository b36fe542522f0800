package db_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/omero-adi/omero-adi/db"
	"github.com/omero-adi/omero-adi/order"
)

func TestCreateClaimFinish(t *testing.T) {
	forEngines(t, func(t *testing.T, url string) {
		s := setup(t, url)
		n := newOrder("/data/demo/alice/a.tif", "/data/demo/alice/b.tif")
		n.FileNames = []string{"a.tif", "b.tif"}
		n.Preprocessing = &order.Preprocessing{Container: "cellularimagingcf/convertleica-docker:v1.2.0",
			InputFile: "{Files}", OutputFolder: "/data", AltOutputFolder: "/out",
			ExtraParams: map[string]string{"saveoption": "single"}}
		o := mustCreate(t, s, n)
		if o.Stage != db.StagePending || o.Source != db.SourceCLI || o.UUID == "" || o.Attempt != 0 {
			t.Fatalf("created order = %+v", o)
		}
		if files, err := o.FileList(); err != nil || len(files) != 2 || files[1] != "/data/demo/alice/b.tif" {
			t.Fatalf("FileList = %v, %v", files, err)
		}
		if o.Timestamp.IsZero() || time.Since(o.Timestamp) > time.Minute || time.Since(o.Timestamp) < -time.Minute {
			t.Fatalf("timestamp = %v", o.Timestamp)
		}
		if o.Preprocessing == nil || o.Preprocessing.ExtraParams["saveoption"] != "single" || o.Preprocessing.AltOutputFolder != "/out" {
			t.Fatalf("preprocessing = %+v", o.Preprocessing)
		}

		claimed := mustClaim(t, s, "w1", 10, time.Minute)
		if len(claimed) != 1 {
			t.Fatalf("claimed %d orders, want 1", len(claimed))
		}
		c := claimed[0]
		if c.UUID != o.UUID || c.Stage != db.StageStarted || c.Attempt != 1 || c.LeaseOwner != "w1" ||
			c.LeaseExpires == nil || c.Preprocessing == nil || c.Preprocessing.Container != n.Preprocessing.Container {
			t.Fatalf("claimed order = %+v", c)
		}
		if until := time.Until(*c.LeaseExpires); until < 30*time.Second || until > 90*time.Second {
			t.Fatalf("lease expires in %s, want about 1m", until)
		}
		if again := mustClaim(t, s, "w2", 10, time.Minute); len(again) != 0 {
			t.Fatalf("second claim got %d orders", len(again))
		}
		if err := s.SetStage(ctx(t), c.Lease(), db.StagePreprocessing, "converting"); err != nil {
			t.Fatalf("SetStage: %v", err)
		}
		if err := s.SetResult(ctx(t), c.Lease(), db.Result{Images: []int64{7, 8}}); err != nil {
			t.Fatalf("SetResult: %v", err)
		}
		if err := s.Finish(ctx(t), c.Lease(), db.StageCompleted, ""); err != nil {
			t.Fatalf("Finish: %v", err)
		}
		got, err := s.Get(ctx(t), o.UUID)
		if err != nil {
			t.Fatalf("Get: %v", err)
		}
		if got.Stage != db.StageCompleted || got.LeaseOwner != "" || got.LeaseExpires != nil ||
			got.Result == nil || len(got.Result.Images) != 2 || got.Description != "" {
			t.Fatalf("finished order = %+v", got)
		}
		if err := s.Finish(ctx(t), c.Lease(), db.StageFailed, "again"); !errors.Is(err, db.ErrLeaseLost) {
			t.Fatalf("second Finish = %v, want ErrLeaseLost", err)
		}
		hist, err := s.History(ctx(t), o.UUID)
		if err != nil {
			t.Fatalf("History: %v", err)
		}
		var stages []string
		for _, e := range hist {
			stages = append(stages, e.Stage)
		}
		want := []string{db.StagePending, db.StageStarted, db.StagePreprocessing, db.StageCompleted}
		if strings.Join(stages, "|") != strings.Join(want, "|") {
			t.Fatalf("history stages = %q, want %q", stages, want)
		}
		if hist[1].Worker != "w1" || hist[0].Worker != "test-host" || hist[2].Description != "converting" {
			t.Fatalf("history = %+v", hist)
		}
		if _, err := s.Get(ctx(t), "no-such-order"); !errors.Is(err, db.ErrNotFound) {
			t.Fatalf("Get unknown = %v, want ErrNotFound", err)
		}
	})
}

func TestCloseIsIdempotent(t *testing.T) {
	forEngines(t, func(t *testing.T, url string) {
		s := setup(t, url)
		waitSignal(t, s.Notify(), "the listener started")
		done := make(chan error, 1)
		go func() { done <- s.Close() }()
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("Close: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("Close did not stop the listener")
		}
		if err := s.Close(); err != nil {
			t.Fatalf("second Close: %v", err)
		}
		if _, err := s.Get(ctx(t), "x"); err == nil || errors.Is(err, db.ErrNotFound) {
			t.Fatalf("Get after Close = %v, want a closed-database error", err)
		}
	})
}

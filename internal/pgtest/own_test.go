package pgtest_test

import (
	"database/sql"
	"testing"
	"time"

	"github.com/omero-adi/omero-adi/internal/pgtest"
)

func TestOwnStopStart(t *testing.T) {
	c := pgtest.Own(t)
	db, err := sql.Open("pgx", c.URL(t))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec(`CREATE TABLE x (v int); INSERT INTO x VALUES (1)`); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second)
	c.Stop()
	if err := db.Ping(); err == nil {
		t.Fatal("ping works while stopped")
	}
	c.Start(t)
	var n int
	var err2 error
	for i := 0; i < 5; i++ {
		if err2 = db.QueryRow(`SELECT count(*) FROM x`).Scan(&n); err2 == nil {
			break
		}
		t.Log(err2)
	}
	if err2 != nil || n != 1 {
		t.Fatalf("after restart: %d rows, %v", n, err2)
	}
}

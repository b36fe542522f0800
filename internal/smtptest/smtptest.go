// Package smtptest runs a real SMTP server for tests: Debian's python3-aiosmtpd
// (`/usr/bin/python3 -m aiosmtpd -n -l 127.0.0.1:PORT -c aiosmtpd.handlers.Mailbox DIR`), which
// stores every message it accepted in a Maildir. Stop and Start take it down and bring it back on
// the same port, for outage tests. A missing aiosmtpd skips locally and fails in CI (testenv).
package smtptest

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"io"
	"math/big"
	"mime"
	"mime/multipart"
	"mime/quotedprintable"
	"net"
	"net/mail"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/omero-adi/omero-adi/internal/testenv"
)

// python is Debian's interpreter, which has the python3-aiosmtpd package (a python3 on PATH may
// be another one, e.g. a pyenv shim).
const python = "/usr/bin/python3"

const hint = "apt-get install python3-aiosmtpd"

// Server is one aiosmtpd process. Addr is host:port; Port its port; CAFile, with TLS, the PEM
// certificate the server presents (self-signed for 127.0.0.1), to trust.
type Server struct {
	Addr   string
	Port   int
	CAFile string
	dir    string
	tls    []string // aiosmtpd's TLS flags
	scheme string

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{} // closed when cmd has exited
}

// TLS modes of StartTLS.
const (
	STARTTLS = "starttls" // plain connection upgraded by STARTTLS, which the server requires
	SMTPS    = "smtps"    // TLS from the first byte
)

// Start runs a server on a free port of 127.0.0.1, stopped when the test ends.
func Start(t testing.TB) *Server { return start(t, "") }

// StartTLS is Start with TLS (STARTTLS or SMTPS) and a fresh self-signed certificate (CAFile).
func StartTLS(t testing.TB, mode string) *Server { return start(t, mode) }

func start(t testing.TB, mode string) *Server {
	t.Helper()
	if err := exec.Command(python, "-c", "import aiosmtpd").Run(); err != nil {
		testenv.Missing(t, "python3-aiosmtpd ("+python+" -m aiosmtpd)", hint)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	_ = ln.Close()
	s := &Server{Addr: "127.0.0.1:" + strconv.Itoa(port), Port: port, dir: filepath.Join(t.TempDir(), "maildir"), scheme: "smtp"}
	if mode != "" {
		cert, key := selfSigned(t)
		s.CAFile = cert
		s.tls = []string{"--tlscert", cert, "--tlskey", key}
		if mode == SMTPS {
			s.tls, s.scheme = []string{"--smtpscert", cert, "--smtpskey", key}, "smtps"
		}
	}
	s.Start(t)
	t.Cleanup(func() { s.Stop(t) })
	return s
}

// URL is the server as a notify smtp_url.
func (s *Server) URL() string { return s.scheme + "://" + s.Addr }

// selfSigned writes a self-signed certificate for 127.0.0.1 and localhost and its key (PEM).
func selfSigned(t testing.TB) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: "smtptest"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, DNSNames: []string{"localhost"},
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IsCA: true, BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	pkcs8, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pkcs8}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

// Start (re)starts the server on its port and waits until it accepts connections.
func (s *Server) Start(t testing.TB) {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil {
		return
	}
	args := append([]string{"-m", "aiosmtpd", "-n", "-l", s.Addr}, s.tls...)
	cmd := exec.Command(python, append(args, "-c", "aiosmtpd.handlers.Mailbox", s.dir)...)
	var errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = io.Discard, &errb
	if err := cmd.Start(); err != nil {
		t.Fatalf("start aiosmtpd: %v", err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", s.Addr, time.Second)
		if err == nil {
			_ = c.Close()
			break
		}
		select {
		case <-exited:
			t.Fatalf("aiosmtpd on %s exited: %s", s.Addr, errb.String())
		default:
		}
		if time.Now().After(deadline) {
			_ = cmd.Process.Kill()
			t.Fatalf("aiosmtpd on %s did not listen within 30s: %s", s.Addr, errb.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	s.cmd, s.exited = cmd, exited
}

// Stop ends the server (SIGTERM, then SIGKILL after 5 s); what it stored stays readable.
func (s *Server) Stop(t testing.TB) {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.exited:
	case <-time.After(5 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.exited
	}
	// The port is free once nothing listens on it any more.
	for i := 0; i < 500; i++ {
		c, err := net.DialTimeout("tcp", s.Addr, 100*time.Millisecond)
		if err != nil {
			break
		}
		_ = c.Close()
		time.Sleep(10 * time.Millisecond)
	}
	s.cmd = nil
}

// Message is one accepted mail, decoded.
type Message struct {
	Header    mail.Header
	MessageID string
	Subject   string // decoded
	To        []string
	Text      string // the text/plain part, decoded
	HTML      string // the text/html part, decoded
	Raw       string // the whole message as stored
}

// Messages returns every message the server accepted so far, in the order they were stored.
func (s *Server) Messages(t testing.TB) []Message {
	t.Helper()
	type file struct {
		path string
		mod  time.Time
	}
	var files []file
	for _, sub := range []string{"new", "cur"} {
		entries, _ := os.ReadDir(filepath.Join(s.dir, sub))
		for _, e := range entries {
			info, err := e.Info()
			if err != nil {
				continue
			}
			files = append(files, file{filepath.Join(s.dir, sub, e.Name()), info.ModTime()})
		}
	}
	sort.Slice(files, func(i, j int) bool { return files[i].mod.Before(files[j].mod) })
	var out []Message
	for _, f := range files {
		b, err := os.ReadFile(f.path)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, parse(t, b))
	}
	return out
}

// Wait returns the messages once there are at least n, failing after timeout.
func (s *Server) Wait(t testing.TB, n int, timeout time.Duration) []Message {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	for {
		ms := s.Messages(t)
		if len(ms) >= n {
			return ms
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%d messages after %s, want %d", len(ms), timeout, n)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func parse(t testing.TB, raw []byte) Message {
	t.Helper()
	m, err := mail.ReadMessage(bytes.NewReader(raw))
	if err != nil {
		t.Fatalf("parse stored message: %v\n%s", err, raw)
	}
	dec := new(mime.WordDecoder)
	subject, err := dec.DecodeHeader(m.Header.Get("Subject"))
	if err != nil {
		subject = m.Header.Get("Subject")
	}
	out := Message{Header: m.Header, MessageID: strings.Trim(m.Header.Get("Message-Id"), "<>"), Subject: subject, Raw: string(raw)}
	if to, err := m.Header.AddressList("To"); err == nil {
		for _, a := range to {
			out.To = append(out.To, a.Address)
		}
	}
	body, _ := io.ReadAll(m.Body)
	walk(t, m.Header.Get("Content-Type"), m.Header.Get("Content-Transfer-Encoding"), body, &out)
	return out
}

// walk decodes the text and HTML parts of a (multipart) body into out.
func walk(t testing.TB, contentType, encoding string, body []byte, out *Message) {
	mt, params, err := mime.ParseMediaType(contentType)
	if err != nil {
		mt = "text/plain"
	}
	if strings.HasPrefix(mt, "multipart/") {
		r := multipart.NewReader(bytes.NewReader(body), params["boundary"])
		for {
			p, err := r.NextRawPart()
			if err != nil {
				return
			}
			b, _ := io.ReadAll(p)
			walk(t, p.Header.Get("Content-Type"), p.Header.Get("Content-Transfer-Encoding"), b, out)
		}
	}
	var text []byte
	switch strings.ToLower(encoding) {
	case "quoted-printable":
		text, _ = io.ReadAll(quotedprintable.NewReader(bytes.NewReader(body)))
	case "base64":
		text, _ = io.ReadAll(base64.NewDecoder(base64.StdEncoding, bytes.NewReader(bytes.ReplaceAll(bytes.ReplaceAll(body, []byte("\r"), nil), []byte("\n"), nil))))
	default:
		text = body
	}
	switch mt {
	case "text/plain":
		out.Text = string(text)
	case "text/html":
		out.HTML = string(text)
	}
}

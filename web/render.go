package web

import (
	"bytes"
	"fmt"
	"html/template"
	"net/http"
	"strings"
	"time"
)

// pageNames are the pages; each is templates/NAME.html inside templates/layout.html.
var pageNames = []string{"orders", "order", "queue", "login", "error"}

var funcs = template.FuncMap{
	"join":  strings.Join,
	"short": func(u string) string { return u[:min(len(u), 8)] },
	"when": func(t time.Time) string {
		if t.IsZero() {
			return ""
		}
		return t.Local().Format("2006-01-02 15:04:05")
	},
	"iso":        func(t time.Time) string { return t.UTC().Format(time.RFC3339) },
	"stageClass": stageClass,
	"stages":     func() any { return stages },
}

func parseTemplates() (map[string]*template.Template, error) {
	out := map[string]*template.Template{}
	for _, name := range pageNames {
		t, err := template.New("layout.html").Funcs(funcs).ParseFS(templateFS, "templates/layout.html", "templates/"+name+".html")
		if err != nil {
			return nil, fmt.Errorf("web: parse template %s: %w", name, err)
		}
		out[name] = t
	}
	return out, nil
}

// pageData is what the layout gets: the page's view in Body.
type pageData struct {
	Title string
	Who   *who
	CSRF  string
	Page  string
	Body  any
}

// loginView is the sign-in form.
type loginView struct {
	CSRF     string
	Message  string
	Password bool // password sign-in is on
	SSO      bool
}

// errorView is an error page.
type errorView struct {
	Code    int
	Title   string
	Message string
}

var titles = map[string]string{"orders": "My orders", "order": "Order", "queue": "Queue", "login": "Sign in", "error": "Error"}

// render writes page name with body; v is the signed-in person or nil.
func (s *Server) render(w http.ResponseWriter, r *http.Request, code int, name string, v *session, body any) {
	d := pageData{Title: titles[name], Page: name, Body: body}
	if v != nil {
		wv := whoView(v)
		d.Who, d.CSRF = &wv, v.csrf
	}
	var b bytes.Buffer
	if err := s.tmpl[name].Execute(&b, d); err != nil {
		s.log.WithError(err).WithField("page", name).Error("render status page")
		http.Error(w, "The page could not be drawn: tell the facility (the agent's log names the error).", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(code)
	_, _ = w.Write(b.Bytes())
}

package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"time"
)

// result is the outcome of one test or subtest.
type result struct {
	Pkg, Test string
	Action    string // pass, fail, skip; "" if it never finished
	Output    []string
}

type results struct {
	Tests map[string]*result // "<pkg> <test>"
	// Output of a package that no test owns (a crash, a timeout, a build error).
	PkgOutput map[string][]string
}

type counts struct{ Passed, Failed, Skipped int }

func (c *counts) add(action string) {
	switch action {
	case "pass":
		c.Passed++
	case "skip":
		c.Skipped++
	default:
		c.Failed++
	}
}

func (c counts) rate() string {
	if c.Passed+c.Failed == 0 {
		return "–"
	}
	return fmt.Sprintf("%.1f%%", 100*float64(c.Passed)/float64(c.Passed+c.Failed))
}

func parseResults(files []string) (*results, error) {
	res := &results{Tests: map[string]*result{}, PkgOutput: map[string][]string{}}
	for _, file := range files {
		f, err := os.Open(file)
		if err != nil {
			return nil, err
		}
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, 1<<20), 16<<20)
		for sc.Scan() {
			var e event
			if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
				continue // a line the test binary printed outside test2json
			}
			if e.Test == "" {
				if e.Action == "output" {
					res.PkgOutput[e.Package] = append(res.PkgOutput[e.Package], e.Output)
				}
				continue
			}
			key := e.Package + " " + e.Test
			r := res.Tests[key]
			if r == nil {
				r = &result{Pkg: e.Package, Test: e.Test}
				res.Tests[key] = r
			}
			switch e.Action {
			case "pass", "fail", "skip":
				r.Action = e.Action
			case "output":
				if len(r.Output) < 400 {
					r.Output = append(r.Output, e.Output)
				}
			}
		}
		f.Close()
		if err := sc.Err(); err != nil {
			return nil, fmt.Errorf("%s: %w", file, err)
		}
	}
	// A test still running when its process died (timeout, crash) counts as failed.
	for _, r := range res.Tests {
		if r.Action == "" {
			r.Action = "fail"
		}
	}
	return res, nil
}

func (res *results) byPackage() map[string][]*result {
	m := map[string][]*result{}
	for _, r := range res.Tests {
		m[r.Pkg] = append(m[r.Pkg], r)
	}
	for _, rs := range m {
		sort.Slice(rs, func(i, j int) bool { return rs[i].Test < rs[j].Test })
	}
	return m
}

func (res *results) total() counts {
	var c counts
	for _, r := range res.Tests {
		c.add(r.Action)
	}
	return c
}

var (
	ansi      = regexp.MustCompile(`\x1b\[[0-9;]*m`)
	logPrefix = regexp.MustCompile(`^\s*[\w.-]+\.go:\d+: `)
	noise     = regexp.MustCompile(`^\s*(=== |--- |\s*$)`)
	// gomatrixserverlib prints response bodies as Go byte slices.
	byteSlice = regexp.MustCompile(`\[((?:\d{1,3} )*\d{1,3})\]`)
)

// decodeBytes turns "contents=[123 34 ...]" into the text it encodes.
func decodeBytes(s string) string {
	return byteSlice.ReplaceAllStringFunc(s, func(m string) string {
		fields := strings.Fields(strings.Trim(m, "[]"))
		if len(fields) < 8 {
			return m
		}
		b := make([]byte, 0, len(fields))
		for _, f := range fields {
			var n int
			if _, err := fmt.Sscan(f, &n); err != nil || n > 255 {
				return m
			}
			b = append(b, byte(n))
		}
		return string(b)
	})
}

// reason picks the first error a test (or its subtests) reported: Complement
// prints errors in red; failing that, a panic or timeout; failing that, the last
// line logged before the failure.
func (res *results) reason(pkg, test string) string {
	var lines []string
	if r := res.Tests[pkg+" "+test]; r != nil {
		lines = append(lines, r.Output...)
	}
	prefix := pkg + " " + test + "/"
	var subs []string
	for key := range res.Tests {
		if strings.HasPrefix(key, prefix) && res.Tests[key].Action == "fail" {
			subs = append(subs, key)
		}
	}
	sort.Strings(subs)
	for _, key := range subs {
		lines = append(lines, res.Tests[key].Output...)
	}
	clean := func(s string) string {
		s = ansi.ReplaceAllString(s, "")
		s = logPrefix.ReplaceAllString(s, "")
		s = decodeBytes(s)
		s = strings.Join(strings.Fields(s), " ")
		if len(s) > 220 {
			s = s[:220] + "…"
		}
		return s
	}
	for _, l := range lines {
		if strings.Contains(l, "\x1b[31m") {
			return clean(l)
		}
	}
	for _, l := range lines {
		if strings.HasPrefix(l, "panic:") || strings.Contains(l, "test timed out") {
			return clean(l)
		}
	}
	for i := len(lines) - 1; i >= 0; i-- {
		if !noise.MatchString(lines[i]) && logPrefix.MatchString(lines[i]) {
			return clean(lines[i])
		}
	}
	return ""
}

type reportInfo struct {
	Upstream      map[string]string
	HomeserverRev string
	Duration      time.Duration
	Jobs          int
	Packages      []string
	Skips         []skip
	Partial       bool
	TimedOut      bool
}

func readUpstream(root string) map[string]string {
	m := map[string]string{}
	b, err := os.ReadFile(filepath.Join(root, "upstream.txt"))
	if err != nil {
		return m
	}
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && !strings.HasPrefix(line, "#") {
			m[strings.TrimSpace(k)] = strings.TrimSpace(v)
		}
	}
	return m
}

func code(s string) string { return "`" + strings.ReplaceAll(s, "`", "'") + "`" }

func renderReport(res *results, info reportInfo) string {
	var b strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	byPkg := res.byPackage()

	w("# Conformance: Complement\n\n")
	w("<!-- Generated by scripts/complement.sh: do not edit by hand. -->\n\n")
	w("Results of [Complement](https://github.com/matrix-org/complement), the Matrix\n")
	w("homeserver conformance suite, run against this homeserver without Docker\n")
	w("(see `tests/complement/README.md`). Regenerate with `./scripts/complement.sh`.\n\n")
	w("| | |\n|---|---|\n")
	w("| Complement | `%s` commit `%s` (%s) |\n", info.Upstream["module"], info.Upstream["commit"], info.Upstream["date"])
	if info.HomeserverRev != "" {
		w("| homeserver | `%s` |\n", info.HomeserverRev)
	}
	w("| run | %s, %s wall clock, %d test processes at once |\n", time.Now().UTC().Format("2006-01-02 15:04 UTC"), info.Duration.Round(time.Second), info.Jobs)
	if info.Partial {
		w("| scope | **partial run** (a package or test filter was given): not the whole suite |\n")
	}
	if info.TimedOut {
		w("| time limit | **reached**: tests that had not started are counted as skipped |\n")
	}
	w("\n## Summary\n\n")
	w("Counts include every test and subtest that reported a result (`go test -json`).\n")
	w("The pass rate is passed / (passed + failed). A test that fails early never\n")
	w("starts its later subtests, so those are in no column: the top-level columns\n")
	w("are the steadier measure.\n\n")
	w("| package | top-level passed | top-level failed | top-level skipped | passed | failed | skipped | pass rate |\n")
	w("|---|---:|---:|---:|---:|---:|---:|---:|\n")
	var allTop, all counts
	for _, p := range info.Packages {
		var top, sub counts
		for _, r := range byPkg[p] {
			sub.add(r.Action)
			if !strings.Contains(r.Test, "/") {
				top.add(r.Action)
			}
		}
		allTop.Passed += top.Passed
		allTop.Failed += top.Failed
		allTop.Skipped += top.Skipped
		all.Passed += sub.Passed
		all.Failed += sub.Failed
		all.Skipped += sub.Skipped
		w("| `%s` | %d | %d | %d | %d | %d | %d | %s |\n", p, top.Passed, top.Failed, top.Skipped, sub.Passed, sub.Failed, sub.Skipped, sub.rate())
	}
	w("| **total** | **%d** | **%d** | **%d** | **%d** | **%d** | **%d** | **%s** |\n\n", allTop.Passed, allTop.Failed, allTop.Skipped, all.Passed, all.Failed, all.Skipped, all.rate())

	w("## Not run\n\n")
	w("These top-level tests are left out by `tests/complement/skip.txt`:\n\n")
	w("| package | test | why |\n|---|---|---|\n")
	for _, s := range info.Skips {
		w("| `%s` | %s | %s |\n", s.Pkg, code(s.Test), s.Reason)
	}
	w("\n")

	w("## Failing tests\n\n")
	w("Each failing top-level test, the first error it reported, and its failing subtests.\n")
	for _, p := range info.Packages {
		var failing []*result
		for _, r := range byPkg[p] {
			if r.Action == "fail" && !strings.Contains(r.Test, "/") {
				failing = append(failing, r)
			}
		}
		if len(failing) == 0 {
			continue
		}
		w("\n### `%s` (%d)\n\n", p, len(failing))
		for _, r := range failing {
			reason := res.reason(p, r.Test)
			if reason == "" {
				reason = "no error message"
			}
			w("- %s: %s\n", code(r.Test), code(reason))
			var subs []string
			for _, s := range byPkg[p] {
				if s.Action == "fail" && strings.HasPrefix(s.Test, r.Test+"/") {
					subs = append(subs, code(strings.TrimPrefix(s.Test, r.Test+"/")))
				}
			}
			if len(subs) > 0 {
				w("  - failing subtests (%d): %s\n", len(subs), strings.Join(subs, ", "))
			}
		}
	}
	for _, p := range info.Packages {
		if out := res.PkgOutput[p]; len(out) > 0 {
			for _, l := range out {
				if strings.Contains(l, "hscomplement: test process") || strings.HasPrefix(l, "panic:") {
					w("\n> `%s`: %s\n", p, strings.TrimSpace(ansi.ReplaceAllString(l, "")))
					break
				}
			}
		}
	}
	w("\n## Passing tests\n\n")
	w("Every passing test and subtest is in the CI gate list, `tests/complement/passing.txt`.\n")
	return b.String()
}

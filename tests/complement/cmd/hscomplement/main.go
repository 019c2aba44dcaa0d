// Command hscomplement runs Complement's test packages against our homeserver
// and reports the results. scripts/complement.sh and scripts/complement-gate.sh
// call it; see tests/complement/README.md.
//
//	hscomplement run   whole suite → results dir + docs/conformance.md
//	hscomplement gate  only the tests in passing.txt; fails if any of them fails
//
// Each Complement package is compiled once, with its main_test.go swapped (go
// test -overlay) for one that calls deployer.TestMain. Its top-level tests are
// then cut into chunks, and the chunks run concurrently, each in its own test
// process inside a private network and mount namespace (unshare -n -m) whose
// /etc/hosts maps hs1..hs3 to 127.0.1.1..3. Every process can therefore bind
// the same addresses and ports as the others.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"time"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: hscomplement run|gate [flags]")
		os.Exit(2)
	}
	mode := os.Args[1]
	fs := flag.NewFlagSet(mode, flag.ExitOnError)
	o := options{}
	fs.StringVar(&o.root, "root", ".", "tests/complement directory")
	fs.StringVar(&o.binary, "binary", "", "homeserver binary")
	fs.StringVar(&o.out, "out", "", "results directory (default: a new temporary directory)")
	fs.IntVar(&o.jobs, "jobs", 4, "test processes at once")
	fs.IntVar(&o.chunk, "chunk", 6, "top-level tests per test process")
	fs.DurationVar(&o.timeout, "timeout", 28*time.Minute, "wall-clock limit for the whole run")
	fs.DurationVar(&o.procTimeout, "process-timeout", 8*time.Minute, "limit for one test process (-test.timeout)")
	fs.StringVar(&o.packages, "packages", "", "comma-separated packages to run (tests/csapi,tests,tests/msc2836...; default all)")
	fs.StringVar(&o.run, "run", "", "only top-level tests matching this regexp")
	fs.StringVar(&o.report, "report", "", "run: write the Markdown report here")
	fs.StringVar(&o.passing, "passing", "passing.txt", "the gate list")
	fs.BoolVar(&o.updatePassing, "update-passing", false, "run: add every test that passed to the gate list")
	fs.StringVar(&o.homeserverRev, "homeserver-rev", "", "the homeserver's revision, for the report")
	if err := fs.Parse(os.Args[2:]); err != nil {
		os.Exit(2)
	}
	var err error
	switch mode {
	case "run":
		err = runFull(o)
	case "gate":
		err = runGate(o)
	default:
		err = fmt.Errorf("unknown mode %q", mode)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "hscomplement:", err)
		os.Exit(1)
	}
}

type options struct {
	root, binary, out, packages, run, report, passing, homeserverRev string
	jobs, chunk                                                      int
	timeout, procTimeout                                             time.Duration
	updatePassing                                                    bool
}

// ---------------------------------------------------------------------------
// Packages, overlays, binaries

type pkg struct {
	Rel        string // path inside Complement: tests/csapi
	ImportPath string
	Name       string // Go package clause of its main_test.go
	Namespace  string // what the original main_test.go passes to complement.TestMain
	Binary     string
	Tests      []string
}

var (
	packageClause = regexp.MustCompile(`(?m)^package (\w+)`)
	namespaceArg  = regexp.MustCompile(`complement\.TestMain\(m, "([^"]+)"`)
)

// discover finds every package under upstream/tests with a main_test.go.
func discover(root string) ([]*pkg, error) {
	upstream := filepath.Join(root, "upstream")
	var pkgs []*pkg
	err := filepath.WalkDir(filepath.Join(upstream, "tests"), func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || d.Name() != "main_test.go" {
			return err
		}
		src, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(upstream, filepath.Dir(path))
		p := &pkg{Rel: filepath.ToSlash(rel), ImportPath: "github.com/matrix-org/complement/" + filepath.ToSlash(rel)}
		if m := packageClause.FindSubmatch(src); m != nil {
			p.Name = string(m[1])
		}
		if m := namespaceArg.FindSubmatch(src); m != nil {
			p.Namespace = string(m[1])
		}
		if p.Name == "" || p.Namespace == "" {
			return fmt.Errorf("%s: cannot read its package name and namespace", path)
		}
		pkgs = append(pkgs, p)
		return nil
	})
	sort.Slice(pkgs, func(i, j int) bool { return order(pkgs[i].Rel) < order(pkgs[j].Rel) })
	return pkgs, err
}

// order starts the slow packages first, so they overlap with the rest:
// msc3902 is one test (TestPartialStateJoin) with ~100 slow subtests.
func order(rel string) string {
	switch rel {
	case "tests/msc3902":
		return "0"
	case "tests":
		return "1"
	case "tests/csapi":
		return "2"
	}
	return "3" + rel
}

// build compiles each package's test binary with the overlay main_test.go.
func build(root, dir string, pkgs []*pkg) error {
	overlay := map[string]string{}
	for _, p := range pkgs {
		src := fmt.Sprintf(`// Generated by hscomplement: replaces Complement's main_test.go (go test -overlay).
package %s

import (
	"testing"

	"homeserver.local/complement/deployer"
)

func TestMain(m *testing.M) {
	deployer.TestMain(m, %q)
}
`, p.Name, p.Namespace)
		file := filepath.Join(dir, "overlay", strings.ReplaceAll(p.Rel, "/", "_")+"_main_test.go")
		if err := os.MkdirAll(filepath.Dir(file), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(file, []byte(src), 0o644); err != nil {
			return err
		}
		target, err := filepath.Abs(filepath.Join(root, "upstream", p.Rel, "main_test.go"))
		if err != nil {
			return err
		}
		overlay[target] = file
		p.Binary = filepath.Join(dir, "bin", strings.ReplaceAll(p.Rel, "/", "_")+".test")
	}
	overlayJSON, _ := json.Marshal(map[string]any{"Replace": overlay})
	overlayFile := filepath.Join(dir, "overlay.json")
	if err := os.WriteFile(overlayFile, overlayJSON, 0o644); err != nil {
		return err
	}
	for _, p := range pkgs {
		cmd := exec.Command("go", "test", "-c", "-overlay", overlayFile, "-o", p.Binary, p.ImportPath)
		cmd.Dir = root
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("building %s: %w", p.Rel, err)
		}
	}
	return nil
}

// list asks a test binary for its top-level tests.
func list(p *pkg) error {
	cmd := exec.Command(p.Binary, "-test.list", ".")
	cmd.Env = testEnv("", "")
	out, err := cmd.Output()
	if err != nil {
		return fmt.Errorf("listing %s: %w", p.Rel, err)
	}
	for _, line := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(line, "Test") {
			p.Tests = append(p.Tests, strings.TrimSpace(line))
		}
	}
	return nil
}

// ---------------------------------------------------------------------------
// The skip list

type skip struct{ Pkg, Test, Reason string }

// readSkips reads skip.txt: "<package> <TestName> <reason...>" per line.
func readSkips(root string) ([]skip, error) {
	f, err := os.Open(filepath.Join(root, "skip.txt"))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var skips []skip
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		fields := strings.SplitN(line, " ", 3)
		if len(fields) < 3 {
			return nil, fmt.Errorf("skip.txt: %q: want <package> <test> <reason>", line)
		}
		skips = append(skips, skip{fields[0], fields[1], strings.TrimSpace(fields[2])})
	}
	return skips, sc.Err()
}

// ---------------------------------------------------------------------------
// Running

type job struct {
	P     *pkg
	Tests []string
	Index int
}

// isolation says how test processes get their own hs1..hs3 addresses.
type isolation int

const (
	namespaces isolation = iota // unshare -n -m, private /etc/hosts
	hostsFile                   // the machine's /etc/hosts, one process at a time
)

const hostsEntries = "127.0.0.1 localhost\n127.0.1.1 hs1\n127.0.1.2 hs2\n127.0.1.3 hs3\n"

func chooseIsolation() isolation {
	cmd := exec.Command("unshare", "-n", "-m", "sh", "-c", "ip link set lo up && true")
	if err := cmd.Run(); err == nil {
		return namespaces
	}
	return hostsFile
}

// ensureHostsFile adds hs1..hs3 to /etc/hosts once (the fallback without namespaces).
func ensureHostsFile() error {
	b, err := os.ReadFile("/etc/hosts")
	if err != nil {
		return err
	}
	if strings.Contains(string(b), "127.0.1.1 hs1") {
		return nil
	}
	f, err := os.OpenFile("/etc/hosts", os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("cannot add hs1..hs3 to /etc/hosts (run as root, or where unshare works): %w", err)
	}
	defer f.Close()
	_, err = f.WriteString("\n# Complement (tests/complement)\n127.0.1.1 hs1\n127.0.1.2 hs2\n127.0.1.3 hs3\n")
	return err
}

func testEnv(binary, logDir string) []string {
	env := []string{}
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "COMPLEMENT_") || strings.HasPrefix(kv, "HS_COMPLEMENT_") || strings.HasPrefix(kv, "DOCKER_HOST=") {
			continue
		}
		env = append(env, kv)
	}
	return append(env,
		"COMPLEMENT_BASE_IMAGE=homeserver:none",
		"COMPLEMENT_HOSTNAME_RUNNING_COMPLEMENT=127.0.0.1",
		"COMPLEMENT_SPAWN_HS_TIMEOUT_SECS=30",
		// No Docker engine here: make the Docker client Complement creates fail at once.
		"DOCKER_HOST=unix:///nonexistent/docker.sock",
		"HS_COMPLEMENT_BINARY="+binary,
		"HS_COMPLEMENT_LOG_DIR="+logDir,
	)
}

// runJobs runs the jobs on o.jobs workers and returns the JSON files written.
func runJobs(ctx context.Context, o options, dir string, jobs []job) ([]string, error) {
	iso := chooseIsolation()
	workers := o.jobs
	if iso == hostsFile {
		fmt.Fprintln(os.Stderr, "hscomplement: unshare is not available; using /etc/hosts and one test process at a time")
		if err := ensureHostsFile(); err != nil {
			return nil, err
		}
		workers = 1
	}
	hosts := filepath.Join(dir, "hosts")
	if err := os.WriteFile(hosts, []byte(hostsEntries), 0o644); err != nil {
		return nil, err
	}
	// go test's own JSON converter; recent Go releases build it on demand.
	test2json := filepath.Join(dir, "bin", "test2json")
	if out, err := exec.Command("go", "build", "-o", test2json, "cmd/test2json").CombinedOutput(); err != nil {
		return nil, fmt.Errorf("building test2json: %w: %s", err, out)
	}
	logDir := filepath.Join(dir, "logs")
	queue := make(chan job)
	var (
		mu    sync.Mutex
		files []string
		done  int
		wg    sync.WaitGroup
	)
	start := time.Now()
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range queue {
				file := filepath.Join(dir, "json", fmt.Sprintf("%s.%03d.json", strings.ReplaceAll(j.P.Rel, "/", "_"), j.Index))
				runOne(ctx, o, iso, hosts, test2json, logDir, j, file)
				mu.Lock()
				files = append(files, file)
				done++
				fmt.Fprintf(os.Stderr, "hscomplement: [%d/%d %s] %s: %s\n", done, len(jobs),
					time.Since(start).Round(time.Second), j.P.Rel, strings.Join(j.Tests, " "))
				mu.Unlock()
			}
		}()
	}
	for _, j := range jobs {
		select {
		case queue <- j:
		case <-ctx.Done():
		}
	}
	close(queue)
	wg.Wait()
	sort.Strings(files)
	return files, nil
}

// runOne runs a job's tests in test processes, appending their JSON to file.
// A process that dies (a panic in a test's goroutine ends the whole process)
// is followed by another for the tests it never started.
func runOne(ctx context.Context, o options, iso isolation, hosts, test2json, logDir string, j job, file string) {
	if err := os.MkdirAll(filepath.Dir(file), 0o755); err != nil {
		return
	}
	out, err := os.Create(file)
	if err != nil {
		return
	}
	defer out.Close()
	remaining := j.Tests
	for len(remaining) > 0 {
		if ctx.Err() != nil {
			// Out of time: record the tests as not run.
			for _, t := range remaining {
				writeEvent(out, event{Action: "skip", Package: j.P.Rel, Test: t, Output: "not run: the run's time limit was reached"})
			}
			return
		}
		runProcess(ctx, o, iso, hosts, test2json, logDir, j.P, remaining, out)
		started := startedTests(file)
		var next []string
		for _, t := range remaining {
			if !started[t] {
				next = append(next, t)
			}
		}
		if len(next) == len(remaining) {
			// No progress: the process cannot start these tests at all.
			for _, t := range next {
				writeEvent(out, event{Action: "fail", Package: j.P.Rel, Test: t, Output: "hscomplement: the test process exited before this test started"})
			}
			return
		}
		remaining = next
	}
}

func runProcess(ctx context.Context, o options, iso isolation, hosts, test2json, logDir string, p *pkg, tests []string, out *os.File) {
	procTimeout := o.procTimeout
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) < procTimeout {
		procTimeout = max(time.Until(dl), time.Second)
	}
	quoted := make([]string, len(tests))
	for i, t := range tests {
		quoted[i] = regexp.QuoteMeta(t)
	}
	args := []string{test2json, "-t", "-p", p.Rel, p.Binary,
		"-test.v=test2json",
		"-test.run", "^(" + strings.Join(quoted, "|") + ")$",
		"-test.timeout", procTimeout.Round(time.Second).String(),
		"-test.count", "1",
	}
	var cmd *exec.Cmd
	if iso == namespaces {
		script := `ip link set lo up && mount --bind "$HS_HOSTS" /etc/hosts && exec "$@"`
		cmd = exec.Command("unshare", append([]string{"-n", "-m", "sh", "-c", script, "sh"}, args...)...)
	} else {
		cmd = exec.Command(args[0], args[1:]...)
	}
	cmd.Dir = filepath.Dir(p.Binary)
	// The servers' data lives under a temporary directory of this process
	// alone, removed afterwards even if the process died before cleaning up.
	tmp, err := os.MkdirTemp("", "hscomplement-proc-")
	if err != nil {
		writeEvent(out, event{Action: "output", Package: p.Rel, Output: "hscomplement: " + err.Error()})
		return
	}
	defer os.RemoveAll(tmp)
	cmd.Env = append(testEnv(o.binary, logDir), "HS_HOSTS="+hosts, "TMPDIR="+tmp)
	cmd.Stdout = out
	var stderr strings.Builder
	cmd.Stderr = &stderr
	// A hung process is killed a little after its own -test.timeout would fire.
	killer := time.AfterFunc(procTimeout+time.Minute, func() {
		if cmd.Process != nil {
			_ = cmd.Process.Kill()
		}
	})
	err = cmd.Run()
	killer.Stop()
	if err != nil && stderr.Len() > 0 {
		writeEvent(out, event{Action: "output", Package: p.Rel, Output: "hscomplement: test process: " + err.Error() + ": " + stderr.String()})
	}
}

// startedTests reads which top-level tests a JSON file shows as started.
func startedTests(file string) map[string]bool {
	started := map[string]bool{}
	f, err := os.Open(file)
	if err != nil {
		return started
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		var e event
		if json.Unmarshal(sc.Bytes(), &e) == nil && e.Action == "run" && !strings.Contains(e.Test, "/") {
			started[e.Test] = true
		}
	}
	return started
}

type event struct {
	Time    time.Time `json:",omitempty"`
	Action  string
	Package string
	Test    string  `json:",omitempty"`
	Elapsed float64 `json:",omitempty"`
	Output  string  `json:",omitempty"`
}

func writeEvent(f *os.File, e event) {
	b, _ := json.Marshal(e)
	_, _ = f.Write(append(b, '\n'))
}

// prepare builds the binaries, lists the tests and filters packages.
func prepare(o options, dir string) ([]*pkg, error) {
	if o.binary == "" {
		return nil, errors.New("-binary is required")
	}
	if _, err := os.Stat(o.binary); err != nil {
		return nil, fmt.Errorf("homeserver binary: %w", err)
	}
	pkgs, err := discover(o.root)
	if err != nil {
		return nil, err
	}
	if o.packages != "" {
		want := map[string]bool{}
		for _, p := range strings.Split(o.packages, ",") {
			want[strings.TrimSpace(p)] = true
		}
		var kept []*pkg
		for _, p := range pkgs {
			if want[p.Rel] {
				kept = append(kept, p)
			}
		}
		pkgs = kept
	}
	fmt.Fprintf(os.Stderr, "hscomplement: building %d test packages\n", len(pkgs))
	if err := build(o.root, dir, pkgs); err != nil {
		return nil, err
	}
	for _, p := range pkgs {
		if err := list(p); err != nil {
			return nil, err
		}
	}
	return pkgs, nil
}

// chunks cuts each package's selected tests into jobs of at most size tests.
func chunks(pkgs []*pkg, selected func(p *pkg, test string) bool, size int) []job {
	var jobs []job
	for _, p := range pkgs {
		var tests []string
		for _, t := range p.Tests {
			if selected(p, t) {
				tests = append(tests, t)
			}
		}
		for i := 0; i < len(tests); i += size {
			end := min(i+size, len(tests))
			jobs = append(jobs, job{P: p, Tests: tests[i:end], Index: len(jobs)})
		}
	}
	return jobs
}

func workDir(o options) (string, error) {
	dir := o.out
	if dir == "" {
		return os.MkdirTemp("", "hscomplement-")
	}
	if err := os.RemoveAll(dir); err != nil {
		return "", err
	}
	return dir, os.MkdirAll(dir, 0o755)
}

// ---------------------------------------------------------------------------
// Modes

func runFull(o options) error {
	started := time.Now()
	dir, err := workDir(o)
	if err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "hscomplement: results in %s\n", dir)
	skips, err := readSkips(o.root)
	if err != nil {
		return err
	}
	pkgs, err := prepare(o, dir)
	if err != nil {
		return err
	}
	var runFilter *regexp.Regexp
	if o.run != "" {
		if runFilter, err = regexp.Compile(o.run); err != nil {
			return err
		}
	}
	skipped := map[string]bool{}
	for _, s := range skips {
		skipped[s.Pkg+" "+s.Test] = true
	}
	jobs := chunks(pkgs, func(p *pkg, t string) bool {
		return !skipped[p.Rel+" "+t] && (runFilter == nil || runFilter.MatchString(t))
	}, o.chunk)
	ctx, cancel := context.WithTimeout(context.Background(), o.timeout)
	defer cancel()
	files, err := runJobs(ctx, o, dir, jobs)
	if err != nil {
		return err
	}
	res, err := parseResults(files)
	if err != nil {
		return err
	}
	total := res.total()
	fmt.Printf("complement: %d passed, %d failed, %d skipped (subtests included; %s)\n",
		total.Passed, total.Failed, total.Skipped, time.Since(started).Round(time.Second))
	if o.report != "" {
		var pkgNames []string
		for _, p := range pkgs {
			pkgNames = append(pkgNames, p.Rel)
		}
		// Report order: tests/csapi, tests, then the MSC packages.
		sort.Slice(pkgNames, func(i, j int) bool {
			rank := func(rel string) string {
				switch rel {
				case "tests/csapi":
					return "0"
				case "tests":
					return "1"
				}
				return "2" + rel
			}
			return rank(pkgNames[i]) < rank(pkgNames[j])
		})
		md := renderReport(res, reportInfo{
			Upstream:      readUpstream(o.root),
			HomeserverRev: o.homeserverRev,
			Duration:      time.Since(started),
			Jobs:          o.jobs,
			Packages:      pkgNames,
			Skips:         skips,
			Partial:       o.run != "" || o.packages != "",
			TimedOut:      ctx.Err() != nil,
		})
		if err := os.WriteFile(o.report, []byte(md), 0o644); err != nil {
			return err
		}
		fmt.Fprintf(os.Stderr, "hscomplement: wrote %s\n", o.report)
	}
	if o.updatePassing {
		added, err := addPassing(o.passing, res)
		if err != nil {
			return err
		}
		fmt.Fprintf(os.Stderr, "hscomplement: %d new entries in %s\n", added, o.passing)
	}
	return nil
}

func runGate(o options) error {
	started := time.Now()
	entries, err := readPassing(o.passing)
	if err != nil {
		return err
	}
	if len(entries) == 0 {
		return fmt.Errorf("%s lists no tests", o.passing)
	}
	dir, err := workDir(o)
	if err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "hscomplement: results in %s\n", dir)
	top := map[string]bool{} // "<pkg> <TopLevel>"
	pkgSet := map[string]bool{}
	for _, e := range entries {
		top[e.Pkg+" "+strings.SplitN(e.Test, "/", 2)[0]] = true
		pkgSet[e.Pkg] = true
	}
	if o.packages == "" {
		var names []string
		for p := range pkgSet {
			names = append(names, p)
		}
		o.packages = strings.Join(names, ",")
	}
	pkgs, err := prepare(o, dir)
	if err != nil {
		return err
	}
	jobs := chunks(pkgs, func(p *pkg, t string) bool { return top[p.Rel+" "+t] }, o.chunk)
	ctx, cancel := context.WithTimeout(context.Background(), o.timeout)
	defer cancel()
	files, err := runJobs(ctx, o, dir, jobs)
	if err != nil {
		return err
	}
	res, err := parseResults(files)
	if err != nil {
		return err
	}
	passed, failed := 0, 0
	for _, e := range entries {
		r := res.Tests[e.Pkg+" "+e.Test]
		if r != nil && r.Action == "pass" {
			passed++
			continue
		}
		failed++
		state := "did not run"
		if r != nil {
			state = r.Action
			if reason := res.reason(e.Pkg, e.Test); reason != "" {
				state += ": " + reason
			}
		}
		fmt.Printf("GATE FAIL %s %s (%s)\n", e.Pkg, e.Test, state)
	}
	fmt.Printf("complement gate (%s, %s):\n", o.passing, time.Since(started).Round(time.Second))
	fmt.Printf("%d passed, %d failed\n", passed, failed)
	if failed > 0 {
		return fmt.Errorf("%d gated tests did not pass (logs of failed tests: %s)", failed, filepath.Join(dir, "logs"))
	}
	return nil
}

// ---------------------------------------------------------------------------
// The gate list

type entry struct{ Pkg, Test string }

func readPassing(path string) ([]entry, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var entries []entry
	for _, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		fields := strings.SplitN(line, " ", 2)
		if len(fields) != 2 {
			return nil, fmt.Errorf("%s: %q: want <package> <test>", path, line)
		}
		entries = append(entries, entry{fields[0], fields[1]})
	}
	return entries, nil
}

// addPassing adds every passing test and subtest to the list. It never removes
// an entry: the list only grows.
func addPassing(path string, res *results) (int, error) {
	existing, err := readPassing(path)
	if err != nil && !os.IsNotExist(err) {
		return 0, err
	}
	have := map[string]bool{}
	for _, e := range existing {
		have[e.Pkg+" "+e.Test] = true
	}
	added := 0
	for key, r := range res.Tests {
		if r.Action == "pass" && !have[key] {
			have[key] = true
			added++
		}
	}
	keys := make([]string, 0, len(have))
	for k := range have {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	header := "# Complement tests that pass today: the CI gate (scripts/complement-gate.sh)\n" +
		"# runs them and fails if any of them fails. \"<package> <test>[/<subtest>]\".\n" +
		"# Add with scripts/complement.sh --update-passing; remove only by hand, with a reason.\n"
	return added, os.WriteFile(path, []byte(header+strings.Join(keys, "\n")+"\n"), 0o644)
}

// Package deployer runs Complement against our homeserver without Docker.
//
// Each Deploy(t, n) starts n fresh homeserver processes, hs1..hsn, each with
// its own temporary directory (SQLite database, signing key, TLS certificate),
// exactly like Complement's non-dirty Docker deployments give every test
// fresh servers. Blueprints are not supported (tests that need OldDeploy are
// skipped by the run scripts).
//
// Addresses: hsN listens on 127.0.1.N, client API on :8008 (plain HTTP) and
// federation on :8448 (TLS, certificate for "hsN" signed by Complement's
// per-package CA). The names hs1..hs3 resolve to 127.0.1.1..3 through
// /etc/hosts; the run scripts give every test process a private network and
// mount namespace with its own hosts file, so several processes can use the
// same addresses at once. Within one process, a deployment made while another
// is still alive (TestPartialStateJoin nests them) gets the next block,
// 127.0.2.N, then 127.0.3.N, ...: Complement reaches it through our round
// tripper, but the names hsN still resolve to the first block.
//
// Environment:
//
//	HS_COMPLEMENT_BINARY  the homeserver binary (required)
//	HS_COMPLEMENT_LOG_DIR keep the server logs of failed tests here
//	HS_COMPLEMENT_LOG     the servers' tracing filter (default "warn")
package deployer

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/matrix-org/complement"
	"github.com/matrix-org/complement/client"
	"github.com/matrix-org/complement/config"
	"github.com/matrix-org/complement/ct"
	"github.com/matrix-org/complement/helpers"
	"github.com/matrix-org/gomatrixserverlib/spec"
)

const (
	clientPort     = 8008
	federationPort = 8448
	// Address blocks 127.0.1.x .. 127.0.<maxBlocks>.x.
	maxBlocks = 16
)

// TestMain is the TestMain of every Complement package we run: the overlay
// main_test.go of each package calls it.
func TestMain(m *testing.M, namespace string) {
	if os.Getenv("COMPLEMENT_BASE_IMAGE") == "" {
		// Complement insists on an image name; nothing uses it with a custom deployer.
		os.Setenv("COMPLEMENT_BASE_IMAGE", "homeserver:none")
	}
	complement.TestMain(m, namespace, complement.WithDeployment(Deploy))
}

// Address blocks in use by live deployments of this process.
var (
	blocksMu sync.Mutex
	blocks   [maxBlocks + 1]bool
)

// takeBlock returns the lowest free address block (1 when nothing else is alive).
func takeBlock() int {
	blocksMu.Lock()
	defer blocksMu.Unlock()
	for b := 1; b <= maxBlocks; b++ {
		if !blocks[b] {
			blocks[b] = true
			return b
		}
	}
	return 0
}

func releaseBlock(b int) {
	blocksMu.Lock()
	defer blocksMu.Unlock()
	blocks[b] = false
}

// Deploy starts numServers fresh homeservers. It is Complement's custom deployer.
func Deploy(t ct.TestLike, numServers int, cfg *config.Complement) complement.Deployment {
	t.Helper()
	binary := os.Getenv("HS_COMPLEMENT_BINARY")
	if binary == "" {
		ct.Fatalf(t, "deployer: HS_COMPLEMENT_BINARY is not set")
	}
	if numServers < 1 || numServers > 9 {
		ct.Fatalf(t, "deployer: cannot deploy %d servers", numServers)
	}
	block := takeBlock()
	if block == 0 {
		ct.Fatalf(t, "deployer: more than %d deployments alive at once", maxBlocks)
	}
	dir, err := os.MkdirTemp("", "hs-complement-")
	if err != nil {
		releaseBlock(block)
		ct.Fatalf(t, "deployer: %s", err)
	}
	d := &Deployment{
		cfg:    cfg,
		dir:    dir,
		block:  block,
		HS:     map[string]*Server{},
		binary: binary,
	}
	// Tests defer Destroy; a test that forgets still releases the addresses.
	if c, ok := t.(interface{ Cleanup(func()) }); ok {
		c.Cleanup(func() { d.destroy(t) })
	}
	for i := 1; i <= numServers; i++ {
		name := fmt.Sprintf("hs%d", i)
		s := &Server{
			Name: name,
			IP:   fmt.Sprintf("127.0.%d.%d", block, i),
			Dir:  filepath.Join(dir, name),
		}
		s.BaseURL = fmt.Sprintf("http://%s:%d", s.IP, clientPort)
		s.FedBaseURL = fmt.Sprintf("https://%s:%d", s.IP, federationPort)
		if err := s.prepare(cfg, binary); err != nil {
			d.destroy(t)
			ct.Fatalf(t, "deployer: preparing %s: %s", name, err)
		}
		d.HS[name] = s
	}
	// Start them together: start-up (migrations, key generation) dominates.
	var wg sync.WaitGroup
	errs := make([]error, numServers+1)
	for i := 1; i <= numServers; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			errs[i] = d.HS[fmt.Sprintf("hs%d", i)].start(cfg.SpawnHSTimeout)
		}(i)
	}
	wg.Wait()
	for i := 1; i <= numServers; i++ {
		if errs[i] != nil {
			d.keepLogs(t, true)
			d.destroy(t)
			ct.Fatalf(t, "deployer: starting hs%d: %s", i, errs[i])
		}
	}
	return d
}

// Deployment is a set of running homeserver processes.
type Deployment struct {
	HS     map[string]*Server
	cfg    *config.Complement
	dir    string
	block  int
	binary string

	localpartCounter atomic.Int64
	destroyOnce      sync.Once
}

// Server is one homeserver process.
type Server struct {
	Name       string
	IP         string
	Dir        string
	BaseURL    string
	FedBaseURL string

	mu      sync.Mutex
	cmd     *exec.Cmd
	exited  chan struct{}
	logFile *os.File
}

// prepare writes the server's configuration and TLS certificate.
func (s *Server) prepare(cfg *config.Complement, binary string) error {
	if err := os.MkdirAll(s.Dir, 0o700); err != nil {
		return err
	}
	caPEM, err := cfg.CACertificateBytes()
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(s.Dir, "ca.crt"), caPEM, 0o600); err != nil {
		return err
	}
	if err := writeServerCertificate(cfg, s.Name, s.IP, s.Dir); err != nil {
		return err
	}
	logLevel := os.Getenv("HS_COMPLEMENT_LOG")
	if logLevel == "" {
		logLevel = "warn"
	}
	toml := fmt.Sprintf(`# Written by tests/complement/deployer for one Complement test.
server_name = %[1]q
signing_key_path = %[2]q

[listeners]
client = "%[3]s:%[4]d"
federation = "%[3]s:%[5]d"

[tls]
cert_path = %[6]q
key_path = %[7]q

[federation]
trusted_ca_paths = [%[8]q]

[database]
url = "sqlite://%[9]s"

[registration]
enabled = true
shared_secret = "complement"

[rate_limits]
enabled = false

[passwords]
argon2_memory_kib = 64
argon2_iterations = 1

[logging]
level = %[10]q
`, s.Name, filepath.Join(s.Dir, "signing.key"), s.IP, clientPort, federationPort,
		filepath.Join(s.Dir, "tls.crt"), filepath.Join(s.Dir, "tls.key"),
		filepath.Join(s.Dir, "ca.crt"), filepath.Join(s.Dir, "homeserver.db"), logLevel)
	return os.WriteFile(filepath.Join(s.Dir, "homeserver.toml"), []byte(toml), 0o600)
}

// writeServerCertificate issues tls.crt/tls.key for the server name, signed by
// Complement's CA, as Complement's Docker images do at start-up.
func writeServerCertificate(cfg *config.Complement, name, ip, dir string) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return err
	}
	template := x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: name},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:     []string{name},
		IPAddresses:  []net.IP{net.ParseIP(ip)},
	}
	der, err := x509.CreateCertificate(rand.Reader, &template, cfg.CACertificate, &key.PublicKey, cfg.CAPrivateKey)
	if err != nil {
		return err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return err
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
	if err := os.WriteFile(filepath.Join(dir, "tls.crt"), certPEM, 0o600); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "tls.key"), keyPEM, 0o600)
}

// start runs the binary and waits until /_matrix/client/versions answers 200.
func (s *Server) start(timeout time.Duration) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil {
		return fmt.Errorf("%s is already running", s.Name)
	}
	logFile, err := os.OpenFile(filepath.Join(s.Dir, "homeserver.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	cmd := exec.Command(os.Getenv("HS_COMPLEMENT_BINARY"), "--config", filepath.Join(s.Dir, "homeserver.toml"))
	cmd.Dir = s.Dir
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	// Only our own options reach the server; HS_* from the caller would override them.
	// anyhow's error backtraces would bury the error itself in the log's tail.
	cmd.Env = append(filteredEnv(), "RUST_LIB_BACKTRACE=0")
	// The server dies with the test process even if the test binary is killed.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return err
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	s.cmd, s.exited, s.logFile = cmd, exited, logFile

	deadline := time.Now().Add(timeout)
	probe := &http.Client{Timeout: time.Second}
	for {
		select {
		case <-exited:
			s.cmd = nil
			logFile.Close()
			return fmt.Errorf("exited during start-up: %s", tail(filepath.Join(s.Dir, "homeserver.log"), 20))
		default:
		}
		res, err := probe.Get(s.BaseURL + "/_matrix/client/versions")
		if err == nil {
			res.Body.Close()
			if res.StatusCode == 200 {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not ready after %s (last error: %v)", timeout, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// stop ends the process: SIGTERM, then SIGKILL after a grace period.
func (s *Server) stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Signal(syscall.SIGCONT) // in case it was paused
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.exited:
	case <-time.After(5 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.exited
	}
	s.logFile.Close()
	s.cmd = nil
}

func (s *Server) signal(sig syscall.Signal) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return fmt.Errorf("%s is not running", s.Name)
	}
	return s.cmd.Process.Signal(sig)
}

func filteredEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "HS_") || strings.HasPrefix(kv, "RUST_LOG=") {
			continue
		}
		env = append(env, kv)
	}
	return env
}

func tail(path string, lines int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	all := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(all) > lines {
		all = all[len(all)-lines:]
	}
	return strings.Join(all, "\n")
}

// destroy stops every server, releases the addresses and removes the data.
func (d *Deployment) destroy(t ct.TestLike) {
	d.destroyOnce.Do(func() {
		var wg sync.WaitGroup
		for _, s := range d.HS {
			wg.Add(1)
			go func(s *Server) {
				defer wg.Done()
				s.stop()
			}(s)
		}
		wg.Wait()
		d.keepLogs(t, t.Failed())
		_ = os.RemoveAll(d.dir)
		releaseBlock(d.block)
	})
}

var unsafeChars = regexp.MustCompile(`[^A-Za-z0-9_.-]+`)

// keepLogs copies the servers' logs to HS_COMPLEMENT_LOG_DIR/<test>/ when the test failed.
func (d *Deployment) keepLogs(t ct.TestLike, failed bool) {
	root := os.Getenv("HS_COMPLEMENT_LOG_DIR")
	if root == "" || !failed {
		return
	}
	dir := filepath.Join(root, unsafeChars.ReplaceAllString(t.Name(), "_"))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return
	}
	for name, s := range d.HS {
		if b, err := os.ReadFile(filepath.Join(s.Dir, "homeserver.log")); err == nil {
			_ = os.WriteFile(filepath.Join(dir, name+".log"), b, 0o644)
		}
	}
}

func (d *Deployment) server(t ct.TestLike, hsName string) *Server {
	t.Helper()
	s, ok := d.HS[hsName]
	if !ok {
		ct.Fatalf(t, "deployer: HS name '%s' not found", hsName)
	}
	return s
}

func (d *Deployment) newClient(t ct.TestLike, hsName string, password string) *client.CSAPI {
	return client.NewCSAPI(client.CSAPIOpts{
		BaseURL:          d.server(t, hsName).BaseURL,
		Client:           client.NewLoggedClient(t, hsName, nil),
		SyncUntilTimeout: 5 * time.Second,
		Debug:            d.cfg.DebugLoggingEnabled,
		Password:         password,
	})
}

// --- complement.Deployment -------------------------------------------------

func (d *Deployment) GetFullyQualifiedHomeserverName(t ct.TestLike, hsName string) spec.ServerName {
	t.Helper()
	d.server(t, hsName)
	return spec.ServerName(hsName)
}

func (d *Deployment) UnauthenticatedClient(t ct.TestLike, hsName string) *client.CSAPI {
	t.Helper()
	return d.newClient(t, hsName, "")
}

// Register follows Complement's Docker deployment: user-N localparts,
// m.login.dummy registration, shared-secret registration for admins.
func (d *Deployment) Register(t ct.TestLike, hsName string, opts helpers.RegistrationOpts) *client.CSAPI {
	t.Helper()
	c := d.newClient(t, hsName, opts.Password)
	password := opts.Password
	if password == "" {
		password = "complement_meets_min_password_req"
		c.Password = password
	}
	localpart := fmt.Sprintf("user-%v", d.localpartCounter.Add(1))
	if opts.LocalpartSuffix != "" {
		localpart += "-" + opts.LocalpartSuffix
	}
	if opts.IsAdmin {
		c.UserID, c.AccessToken, c.DeviceID = c.RegisterSharedSecret(t, localpart, password, true)
	} else {
		c.UserID, c.AccessToken, c.DeviceID = c.RegisterUser(t, localpart, password)
	}
	return c
}

func (d *Deployment) Login(t ct.TestLike, hsName string, existing *client.CSAPI, opts helpers.LoginOpts) *client.CSAPI {
	t.Helper()
	localpart := strings.SplitN(strings.TrimPrefix(existing.UserID, "@"), ":", 2)[0]
	c := d.newClient(t, hsName, existing.Password)
	if opts.Password != "" {
		c.Password = opts.Password
	}
	if opts.DeviceID == "" {
		c.UserID, c.AccessToken, c.DeviceID = c.LoginUser(t, localpart, opts.Password)
	} else {
		c.UserID, c.AccessToken, c.DeviceID = c.LoginUser(t, localpart, opts.Password, client.WithDeviceID(opts.DeviceID))
	}
	return c
}

func (d *Deployment) AppServiceUser(t ct.TestLike, hsName, appServiceUserID string) *client.CSAPI {
	t.Helper()
	ct.Fatalf(t, "deployer: application services are not supported")
	return nil
}

// Restart restarts every server on the same data directory and addresses.
func (d *Deployment) Restart(t ct.TestLike) error {
	t.Helper()
	for _, s := range d.HS {
		s.stop()
		if err := s.start(d.cfg.SpawnHSTimeout); err != nil {
			t.Errorf("deployer: restarting %s: %s", s.Name, err)
			return err
		}
	}
	return nil
}

func (d *Deployment) StopServer(t ct.TestLike, hsName string) {
	t.Helper()
	d.server(t, hsName).stop()
}

func (d *Deployment) StartServer(t ct.TestLike, hsName string) {
	t.Helper()
	if err := d.server(t, hsName).start(d.cfg.SpawnHSTimeout); err != nil {
		ct.Fatalf(t, "deployer: StartServer %s: %s", hsName, err)
	}
}

// PauseServer suspends the process (SIGSTOP): like `docker pause`, the
// addresses stay bound and connections hang.
func (d *Deployment) PauseServer(t ct.TestLike, hsName string) {
	t.Helper()
	if err := d.server(t, hsName).signal(syscall.SIGSTOP); err != nil {
		ct.Fatalf(t, "deployer: PauseServer: %s", err)
	}
}

func (d *Deployment) UnpauseServer(t ct.TestLike, hsName string) {
	t.Helper()
	if err := d.server(t, hsName).signal(syscall.SIGCONT); err != nil {
		ct.Fatalf(t, "deployer: UnpauseServer: %s", err)
	}
}

// ContainerID returns the process id: there are no containers.
func (d *Deployment) ContainerID(t ct.TestLike, hsName string) string {
	t.Helper()
	s := d.server(t, hsName)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		ct.Fatalf(t, "deployer: %s is not running", hsName)
	}
	return fmt.Sprintf("pid-%d", s.cmd.Process.Pid)
}

func (d *Deployment) Destroy(t ct.TestLike) {
	t.Helper()
	d.destroy(t)
}

func (d *Deployment) GetConfig() *config.Complement { return d.cfg }

func (d *Deployment) Network() string { return "" }

// RoundTripper maps https://hsN to that server's federation listener and
// https://<HostnameRunningComplement>:port to Complement's own servers, like
// Complement's Docker round tripper (which does not verify certificates either).
func (d *Deployment) RoundTripper() http.RoundTripper {
	return &roundTripper{d: d}
}

type roundTripper struct{ d *Deployment }

func (rt *roundTripper) RoundTrip(req *http.Request) (*http.Response, error) {
	host := req.URL.Hostname()
	if host == rt.d.cfg.HostnameRunningComplement {
		req.URL.Host = "127.0.0.1"
		if port := req.URL.Port(); port != "" {
			req.URL.Host += ":" + port
		}
	} else {
		s, ok := rt.d.HS[host]
		if !ok {
			return nil, fmt.Errorf("deployer round tripper: unknown hostname %q", host)
		}
		u, err := url.Parse(s.FedBaseURL)
		if err != nil {
			return nil, err
		}
		req.URL.Host = u.Host
	}
	req.URL.Scheme = "https"
	transport := &http.Transport{
		TLSClientConfig:   &tls.Config{ServerName: host, InsecureSkipVerify: true}, //nolint:gosec // as Complement's own
		DialContext:       (&net.Dialer{Timeout: 10 * time.Second}).DialContext,
		DisableKeepAlives: true,
	}
	return transport.RoundTrip(req)
}

var _ complement.Deployment = (*Deployment)(nil)

package testserver

import (
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/myelin-chat/myelin/config"
	"github.com/myelin-chat/myelin/federationapi/transport"
	"github.com/myelin-chat/myelin/internal/tlsutil"
)

// Network is a set of test servers that federate with each other. Each has
// a name (hs1.test, hs2.test...) that the network's resolver maps through
// an SRV record to its own 127.0.0.x address, where a TLS federation
// listener answers with a certificate from the network's test CA, which
// every server of the network trusts. Between the name and the listener
// sits a link that Partition can cut, to make servers unreachable.
type Network struct {
	t        testing.TB
	Resolver *transport.StaticResolver
	caPath   string
	caCert   []byte
	caKey    []byte
	mu       sync.Mutex
	members  map[string]*member
}

// nextIP hands out 127.0.0.2 and up, across all networks of the process.
var nextIP atomic.Int32

// NewNetwork creates an empty network with its own CA.
func NewNetwork(t testing.TB) *Network {
	t.Helper()
	cert, key, err := tlsutil.NewCA("Myelin test CA")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(path, cert, 0o600); err != nil {
		t.Fatal(err)
	}
	return &Network{t: t, Resolver: transport.NewStaticResolver(), caPath: path, caCert: cert, caKey: key, members: map[string]*member{}}
}

// Start starts a server of the network named name (a DNS name without a
// port, such as hs1.test).
func (n *Network) Start(name string, opts ...Options) *Server {
	n.t.Helper()
	var o Options
	if len(opts) > 0 {
		o = opts[0]
	}
	return start(n.t, o, n, name)
}

// Partition cuts the links of the named servers: nobody can reach them
// over federation (they can still reach others), and the connections open
// to them break. Heal restores them.
func (n *Network) Partition(names ...string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, name := range names {
		n.members[name].link.setUp(false)
	}
}

// Heal restores every link.
func (n *Network) Heal() {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, m := range n.members {
		m.link.setUp(true)
	}
}

// member is one server's place in a network.
type member struct {
	net      *Network
	name, ip string
	certPath string
	keyPath  string
	fedAddr  string // the federation listener's address (kept across restarts)
	link     *link
}

func (n *Network) add(t testing.TB, name, dir string) *member {
	ip := fmt.Sprintf("127.0.0.%d", 2+nextIP.Add(1)%250)
	cert, key, err := tlsutil.IssueCert(n.caCert, n.caKey, []string{name}, 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	m := &member{net: n, name: name, ip: ip, certPath: filepath.Join(dir, "fed-cert.pem"), keyPath: filepath.Join(dir, "fed-key.pem")}
	if err := os.WriteFile(m.certPath, cert, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(m.keyPath, key, 0o600); err != nil {
		t.Fatal(err)
	}
	l, err := newLink(ip)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(l.close)
	m.link = l
	addr := netip.MustParseAddr(ip)
	n.Resolver.SetHost(name, addr)
	n.Resolver.SetSRV("_matrix-fed._tcp."+name, net.SRV{Target: name, Port: l.port(), Priority: 10, Weight: 10})
	n.mu.Lock()
	n.members[name] = m
	n.mu.Unlock()
	return m
}

// configure points the server's configuration at the network.
func (m *member) configure(cfg *config.Config) {
	cfg.Federation.CACertsPath = m.net.caPath
	cfg.Federation.AllowPrivateAddresses = true
	cfg.Listeners.FederationTLS = config.TLSListener{Address: m.ip + ":0", CertPath: m.certPath, KeyPath: m.keyPath}
}

// listen opens the federation listener (on the same address as before
// after a restart) and points the link at it.
func (m *member) listen(t testing.TB) net.Listener {
	addr := m.ip + ":0"
	if m.fedAddr != "" {
		addr = m.fedAddr
	}
	var ln net.Listener
	var err error
	for range 100 {
		if ln, err = net.Listen("tcp", addr); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("federation listener on %s: %v", addr, err)
	}
	m.fedAddr = ln.Addr().String()
	m.link.setTarget(m.fedAddr)
	return ln
}

// link is a TCP relay from a server's published address to its federation
// listener that can be cut.
type link struct {
	ln     net.Listener
	mu     sync.Mutex
	target string
	up     bool
	conns  map[net.Conn]bool
}

func newLink(ip string) (*link, error) {
	ln, err := net.Listen("tcp", ip+":0")
	if err != nil {
		return nil, err
	}
	l := &link{ln: ln, up: true, conns: map[net.Conn]bool{}}
	go l.serve()
	return l, nil
}

func (l *link) port() uint16 { return uint16(l.ln.Addr().(*net.TCPAddr).Port) }

func (l *link) setTarget(addr string) {
	l.mu.Lock()
	l.target = addr
	l.mu.Unlock()
}

func (l *link) setUp(up bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.up = up
	if !up {
		for c := range l.conns {
			c.Close()
		}
	}
}

func (l *link) close() {
	l.ln.Close()
	l.setUp(false)
}

func (l *link) serve() {
	for {
		c, err := l.ln.Accept()
		if err != nil {
			return
		}
		go l.relay(c)
	}
}

func (l *link) relay(c net.Conn) {
	l.mu.Lock()
	up, target := l.up, l.target
	l.mu.Unlock()
	if !up || target == "" {
		c.Close()
		return
	}
	back, err := net.DialTimeout("tcp", target, 5*time.Second)
	if err != nil {
		c.Close()
		return
	}
	l.mu.Lock()
	if !l.up {
		l.mu.Unlock()
		c.Close()
		back.Close()
		return
	}
	l.conns[c], l.conns[back] = true, true
	l.mu.Unlock()
	done := make(chan struct{}, 2)
	pipe := func(dst, src net.Conn) {
		_, _ = io.Copy(dst, src)
		done <- struct{}{}
	}
	go pipe(back, c)
	go pipe(c, back)
	<-done
	c.Close()
	back.Close()
	<-done
	l.mu.Lock()
	delete(l.conns, c)
	delete(l.conns, back)
	l.mu.Unlock()
}

// Command myelin is the Myelin homeserver.
//
//	myelin [run] [--config myelin.yaml]   serve (the default; creates a local config on first run)
//	myelin generate-config --server-name example.org [-o file]
//	myelin generate-keys [--key file] [--tls-cert file --tls-key file --server-name name]
//	myelin create-account --username alice [--admin] [--config myelin.yaml]
//	myelin check-config [--config myelin.yaml]
//	myelin healthcheck [--config myelin.yaml | --url URL]
//	myelin version
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

type command struct {
	name    string
	summary string
	run     func(ctx context.Context, args []string, io stdio) int
}

type stdio struct {
	in       io.Reader
	out, err io.Writer
}

var commands = []command{
	{"run", "serve the homeserver (the default command)", cmdRun},
	{"generate-config", "write a commented production configuration", cmdGenerateConfig},
	{"generate-keys", "create a signing key (and optionally a self-signed TLS certificate)", cmdGenerateKeys},
	{"create-account", "create an account (the password is read from a prompt or stdin)", cmdCreateAccount},
	{"check-config", "validate a configuration file and exit", cmdCheckConfig},
	{"healthcheck", "exit 0 when the server answers (for container health checks)", cmdHealthcheck},
	{"version", "print the version", cmdVersion},
}

func run(ctx context.Context, args []string, in io.Reader, out, errw io.Writer) int {
	s := stdio{in: in, out: out, err: errw}
	if len(args) == 0 || (len(args[0]) > 0 && args[0][0] == '-' && args[0] != "-h" && args[0] != "--help" && args[0] != "-help") {
		return cmdRun(ctx, args, s)
	}
	switch args[0] {
	case "-h", "--help", "-help", "help":
		usage(out)
		return 0
	}
	for _, c := range commands {
		if c.name == args[0] {
			return c.run(ctx, args[1:], s)
		}
	}
	fmt.Fprintf(errw, "myelin: unknown command %q\n\n", args[0])
	usage(errw)
	return 2
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "Myelin, a Matrix homeserver.\n\nUsage: myelin [command] [flags]\n\nCommands:")
	for _, c := range commands {
		fmt.Fprintf(w, "  %-16s %s\n", c.name, c.summary)
	}
	fmt.Fprintln(w, "\nRun 'myelin <command> --help' for the flags of a command.")
}

// Command controlplane runs the control plane: the HTTP API, the agents'
// websocket endpoint and the embedded store; and its admin commands, which
// talk to a running control plane's API.
//
//	controlplane serve --data DIR [--listen ADDR] [--config FILE] [--tls-cert F --tls-key F] [--admin-token-file F]
//	controlplane agents|connections|jobs COMMAND [flags]   (controlplane agents -h)
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"go.uber.org/zap"

	"github.com/orchestrator/orchestrator/controlplane"
	"github.com/orchestrator/orchestrator/controlplane/cli"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	switch os.Args[1] {
	case "serve":
		os.Exit(serve(os.Args[2:]))
	case "version":
		fmt.Println(version)
	case "agents", "connections", "jobs":
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		code := cli.Run(ctx, os.Args[1:], cli.Env{Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr, Getenv: os.Getenv})
		stop()
		os.Exit(code)
	default:
		usage()
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: controlplane serve --data DIR [flags]   (controlplane serve -h for flags)\n"+
		"       controlplane agents|connections|jobs COMMAND [flags]   (admin commands; controlplane agents -h)\n"+
		"       controlplane version")
	os.Exit(2)
}

func serve(args []string) int {
	fs := flag.NewFlagSet("serve", flag.ExitOnError)
	configFile := fs.String("config", "", "YAML config file (optional; flags override it)")
	listen := fs.String("listen", "", "address to listen on (default "+controlplane.DefaultListen+")")
	data := fs.String("data", "", "data directory of the embedded store (required)")
	cert := fs.String("tls-cert", "", "TLS certificate file (PEM); serves HTTPS with --tls-key")
	key := fs.String("tls-key", "", "TLS private key file (PEM)")
	tokenFile := fs.String("admin-token-file", "", "file holding the admin API token (else $CONTROLPLANE_ADMIN_TOKEN, else DATA/admin-token)")
	addrFile := fs.String("addr-file", "", "write the address listened on to this file")
	logFormat := fs.String("log-format", "", "log format: auto, json or console")
	logLevel := fs.String("log-level", "", "log level: debug, info, warn or error")
	_ = fs.Parse(args)

	c, err := controlplane.LoadServeConfig(*configFile)
	if err != nil {
		fmt.Fprintln(os.Stderr, "controlplane:", err)
		return 2
	}
	for _, o := range []struct {
		v   string
		dst *string
	}{
		{*listen, &c.Listen}, {*data, &c.DataDir}, {*cert, &c.TLSCertFile}, {*key, &c.TLSKeyFile},
		{*tokenFile, &c.AdminTokenFile}, {*addrFile, &c.AddrFile}, {*logFormat, &c.Log.Format}, {*logLevel, &c.Log.Level},
	} {
		if o.v != "" {
			*o.dst = o.v
		}
	}
	if c.Log.Level == "" {
		c.Log.Level = "info"
	}
	log, closeLog, err := controlplane.OpenLog(c.Log)
	if err != nil {
		fmt.Fprintln(os.Stderr, "controlplane:", err)
		return 2
	}
	defer closeLog()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := controlplane.Serve(ctx, c, log, version, os.Getenv); err != nil {
		log.Error("control plane failed", zap.Error(err))
		return 1
	}
	return 0
}

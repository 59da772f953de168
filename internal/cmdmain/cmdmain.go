// Package cmdmain is what the commands' main functions share: their flags
// registered, parsed and checked before anything starts, and a run bound to
// SIGTERM and SIGINT.
package cmdmain

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"k8s.io/klog/v2"
)

// Options are a command's flags.
type Options interface {
	// AddFlags registers the flags on fs.
	AddFlags(fs *flag.FlagSet)
	// Validate says which flag is wrong and why.
	Validate() error
}

// Run registers o's flags and klog's, parses the command line, and exits
// with 2 if o is not valid. Otherwise run serves until SIGTERM or SIGINT
// ends its context, and its result is the exit code.
func Run(name string, o Options, run func(ctx context.Context) int) {
	o.AddFlags(flag.CommandLine)
	klog.InitFlags(nil)
	flag.Parse()
	if err := o.Validate(); err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", name, err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	code := run(ctx)
	stop()
	klog.Flush()
	os.Exit(code)
}

// Command mkimage writes a one-layer container image as a docker-archive
// tarball (what `ctr images import` and `docker load` read) from files on
// this machine, with no Docker engine and no registry.
//
//	mkimage --tag dotmesh-csi:dev --out bin/images/dotmesh-csi.tar \
//	  --file bin/dotmesh-node=/dotmesh-node --entrypoint /dotmesh-node
//
// The layer is reproducible: owners are root and times are zero, so the
// same inputs give the same image ID.
package main

import (
	"archive/tar"
	"bytes"
	"flag"
	"fmt"
	"io"
	"os"
	"path"
	"runtime"
	"sort"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

type pairs []string

func (p *pairs) String() string     { return strings.Join(*p, ",") }
func (p *pairs) Set(v string) error { *p = append(*p, v); return nil }

func main() {
	var files, links, dirs, entry, env pairs
	tag := flag.String("tag", "", "image reference, e.g. dotmesh-csi:dev")
	out := flag.String("out", "", "docker-archive tarball to write")
	flag.Var(&files, "file", "SRC=DST: copy a file from this machine to DST in the image (repeatable)")
	flag.Var(&links, "link", "DST=TARGET: a symlink in the image (repeatable)")
	flag.Var(&dirs, "dir", "an empty folder in the image, e.g. /tmp (repeatable)")
	flag.Var(&entry, "entrypoint", "the entrypoint, one argument per flag")
	flag.Var(&env, "env", "KEY=VALUE in the image's environment (repeatable)")
	flag.Parse()
	if *tag == "" || *out == "" {
		fmt.Fprintln(os.Stderr, "mkimage: --tag and --out are required")
		os.Exit(2)
	}
	if err := build(*tag, *out, files, links, dirs, entry, env); err != nil {
		fmt.Fprintf(os.Stderr, "mkimage %s: %v\n", *tag, err)
		os.Exit(1)
	}
}

func build(tag, out string, files, links, dirs, entry, env []string) error {
	ref, err := name.NewTag(tag)
	if err != nil {
		return err
	}
	layerTar, err := layer(files, links, dirs)
	if err != nil {
		return err
	}
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(layerTar)), nil })
	if err != nil {
		return err
	}
	img, err := mutate.AppendLayers(empty.Image, l)
	if err != nil {
		return err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", runtime.GOARCH
	cf.Config.Entrypoint = entry
	cf.Config.Env = append([]string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}, env...)
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		return err
	}
	if err := os.MkdirAll(path.Dir(out), 0o755); err != nil {
		return err
	}
	if err := tarball.WriteToFile(out, ref, img); err != nil {
		return err
	}
	id, err := img.ConfigName()
	if err != nil {
		return err
	}
	fmt.Printf("%s %s %s (%d bytes of layer)\n", out, tag, id, len(layerTar))
	return nil
}

// layer is the image's only layer: the parent folders of every entry, then
// the files, links and folders asked for, in a stable order.
func layer(files, links, dirs []string) ([]byte, error) {
	type entry struct {
		hdr tar.Header
		src string
	}
	entries := map[string]entry{}
	addParents := func(p string) {
		for d := path.Dir(p); d != "/" && d != "."; d = path.Dir(d) {
			entries[d] = entry{hdr: tar.Header{Typeflag: tar.TypeDir, Name: strings.TrimPrefix(d, "/") + "/", Mode: 0o755}}
		}
	}
	for _, d := range dirs {
		d = path.Clean("/" + d)
		addParents(d)
		mode := int64(0o755)
		if d == "/tmp" {
			mode = 0o1777
		}
		entries[d] = entry{hdr: tar.Header{Typeflag: tar.TypeDir, Name: strings.TrimPrefix(d, "/") + "/", Mode: mode}}
	}
	for _, f := range files {
		src, dst, ok := strings.Cut(f, "=")
		if !ok {
			return nil, fmt.Errorf("--file %q: want SRC=DST", f)
		}
		st, err := os.Stat(src)
		if err != nil {
			return nil, err
		}
		dst = path.Clean("/" + dst)
		addParents(dst)
		entries[dst] = entry{hdr: tar.Header{Typeflag: tar.TypeReg, Name: strings.TrimPrefix(dst, "/"), Mode: int64(st.Mode().Perm()), Size: st.Size()}, src: src}
	}
	for _, l := range links {
		dst, target, ok := strings.Cut(l, "=")
		if !ok {
			return nil, fmt.Errorf("--link %q: want DST=TARGET", l)
		}
		dst = path.Clean("/" + dst)
		addParents(dst)
		entries[dst] = entry{hdr: tar.Header{Typeflag: tar.TypeSymlink, Name: strings.TrimPrefix(dst, "/"), Linkname: target, Mode: 0o777}}
	}
	names := make([]string, 0, len(entries))
	for n := range entries {
		names = append(names, n)
	}
	sort.Strings(names)
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, n := range names {
		e := entries[n]
		e.hdr.Format = tar.FormatPAX
		if err := tw.WriteHeader(&e.hdr); err != nil {
			return nil, err
		}
		if e.src != "" {
			f, err := os.Open(e.src)
			if err != nil {
				return nil, err
			}
			_, err = io.Copy(tw, f)
			f.Close()
			if err != nil {
				return nil, fmt.Errorf("%s: %w", e.src, err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

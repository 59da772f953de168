package zfs

import (
	"context"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
)

// maxTokenLen bounds a resume token taken from a peer. Real tokens are a
// few hundred bytes (a compressed nvlist in hex).
const maxTokenLen = 16 << 10

// ValidateResumeToken checks the shape OpenZFS gives a receive_resume_token,
// "<version>-<checksum>-<length>-<hex payload>", so a token that came over
// the network can never be read by `zfs send` as an option.
func ValidateResumeToken(token string) error {
	bad := func(why string) error {
		return &Error{Kind: KindInvalid, Op: "validate resume token", Target: abbreviate(token), Msg: why}
	}
	if len(token) > maxTokenLen {
		return bad("too long")
	}
	parts := strings.Split(token, "-")
	if len(parts) != 4 {
		return bad("want 4 fields separated by '-'")
	}
	for i, p := range parts {
		if p == "" {
			return bad("empty field")
		}
		for _, r := range p {
			digit := r >= '0' && r <= '9'
			if !digit && (i == 0 || r < 'a' || r > 'f') {
				return bad(fmt.Sprintf("character %q in field %d", r, i+1))
			}
		}
	}
	return nil
}

// abbreviate keeps error messages short: tokens run to hundreds of bytes.
func abbreviate(s string) string {
	if len(s) > 24 {
		return s[:24] + "…"
	}
	return s
}

// ResumeToken returns the receive_resume_token of ds: "" when no
// interrupted receive left state there. Only ask on tools where
// ResumableReceive is true: zfs-fuse fails on the property name.
func (c *Client) ResumeToken(ctx context.Context, ds string) (string, error) {
	got, err := c.Get(ctx, []string{ds}, false, "receive_resume_token")
	if err != nil {
		return "", err
	}
	if len(got) != 1 {
		return "", &Error{Kind: KindNotFound, Op: "zfs get receive_resume_token", Target: ds}
	}
	if v := got[0].Props["receive_resume_token"].Value; v != "-" {
		return v, nil
	}
	return "", nil
}

// ResumeInfo is what a resume token says about the interrupted stream.
type ResumeInfo struct {
	ToName   string // the sender's snapshot: <pool>/<dataset>@<snap>
	ToGUID   uint64
	FromGUID uint64 // 0 for a full stream
	Bytes    int64  // stream bytes the receiver already has
}

// ResumeInfo asks `zfs send -nv -t` what a token resumes. The dry run fails
// ("cannot resume send: ... no longer exists") when the sender no longer
// holds the snapshots the token names, which is how a stale token is told
// from a usable one before any stream starts.
func (c *Client) ResumeInfo(ctx context.Context, token string) (ResumeInfo, error) {
	if err := ValidateResumeToken(token); err != nil {
		return ResumeInfo{}, err
	}
	out, err := c.exec(ctx, "zfs send -t", abbreviate(token), c.opts.ZFS, "send", "-nv", "-t", token)
	if err != nil {
		return ResumeInfo{}, err
	}
	return parseResumeInfo(out)
}

// parseResumeInfo reads the "resume token contents" nvlist that
// `zfs send -nv -t` prints ("\tkey = value" lines, numbers in hex).
func parseResumeInfo(out string) (ResumeInfo, error) {
	var ri ResumeInfo
	num := func(v string) (uint64, error) {
		return strconv.ParseUint(strings.TrimPrefix(v, "0x"), 16, 64)
	}
	for _, line := range strings.Split(out, "\n") {
		k, v, ok := strings.Cut(strings.TrimSpace(line), " = ")
		if !ok {
			continue
		}
		var err error
		switch k {
		case "toname":
			ri.ToName = v
		case "toguid":
			ri.ToGUID, err = num(v)
		case "fromguid":
			ri.FromGUID, err = num(v)
		case "bytes":
			// A count above MaxInt64 would wrap to a negative Bytes
			// (found by FuzzParseResumeInfo); no stream is that long.
			var b uint64
			if b, err = num(v); err == nil && b > math.MaxInt64 {
				err = fmt.Errorf("byte count out of range")
			}
			ri.Bytes = int64(b)
		}
		if err != nil {
			return ResumeInfo{}, fmt.Errorf("zfs send -nv -t: %s = %q: %w", k, v, err)
		}
	}
	if ri.ToName == "" || ri.ToGUID == 0 {
		return ResumeInfo{}, fmt.Errorf("zfs send -nv -t: no toname/toguid in %q", out)
	}
	if err := ValidateSnapshot(ri.ToName); err != nil {
		return ResumeInfo{}, err
	}
	return ri, nil
}

// SendResume writes the rest of an interrupted stream to w (`zfs send -t`)
// and returns the bytes written.
func (c *Client) SendResume(ctx context.Context, token string, w io.Writer) (int64, error) {
	if err := ValidateResumeToken(token); err != nil {
		return 0, err
	}
	return c.stream(ctx, abbreviate(token), w, "send", "-t", token)
}

// AbortReceive discards the partial state an interrupted `zfs recv -s`
// left on ds (`zfs recv -A`). A fresh stream is refused while it is there,
// even with -F ("destination contains partially-complete state").
func (c *Client) AbortReceive(ctx context.Context, ds string) error {
	if err := ValidateDataset(ds); err != nil {
		return err
	}
	_, err := c.zfs(ctx, "recv", ds, "-A", ds)
	return err
}

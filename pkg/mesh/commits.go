package mesh

import (
	"context"
	"errors"
	"sort"

	"github.com/dotmesh-io/dotmesh-csi/pkg/cluster"
	"github.com/dotmesh-io/dotmesh-csi/pkg/zfsd"
	"github.com/dotmesh-io/dotmesh-csi/pkg/zfsd/remote"
)

// ListCommits lists each dot's commits as its master has them.
func (s *Store) ListCommits(ctx context.Context) ([]zfsd.Commit, error) {
	recs, err := s.cfg.View.ListDots(ctx) // with deleted dots' commits
	if err != nil {
		return nil, err
	}
	masterOf := map[string]string{}
	for _, r := range recs {
		masterOf[r.ID] = r.Master
	}
	pools, err := s.Pools(ctx)
	if err != nil {
		return nil, err
	}
	var out []zfsd.Commit
	for _, p := range pools {
		c, _, err := s.client(ctx, p.Name)
		if err != nil {
			return nil, err
		}
		cs, err := c.ListCommits(ctx)
		if err != nil {
			return nil, err
		}
		for _, x := range cs {
			if masterOf[x.DotID] == p.Name {
				out = append(out, x)
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

func (s *Store) GetCommit(ctx context.Context, id string) (zfsd.Commit, error) {
	rec, err := s.holder(ctx, dotOf(id))
	if err != nil {
		return zfsd.Commit{}, notFound("commit", id)
	}
	c, _, err := s.client(ctx, rec.Master)
	if err != nil {
		return zfsd.Commit{}, err
	}
	return c.GetCommit(ctx, id)
}

func (s *Store) GetCommitByName(ctx context.Context, name string) (zfsd.Commit, error) {
	cs, err := s.ListCommits(ctx)
	return named(cs, err, "commit", name, func(c zfsd.Commit) string { return c.Name })
}

// CreateCommit commits on the master, records it, and replicates it in
// the background.
func (s *Store) CreateCommit(ctx context.Context, dotID, name string) (zfsd.Commit, error) {
	commit, err := onMaster(ctx, s, dotID,
		func(c *remote.Client) (zfsd.Commit, error) { return c.CreateCommit(ctx, dotID, name) },
		func(c zfsd.Commit) error { return s.noteCommit(ctx, dotID, c.ID) })
	if err != nil {
		return commit, err
	}
	s.Replicate(dotID)
	return commit, nil
}

func (s *Store) noteCommit(ctx context.Context, dotID, commitID string) error {
	return s.updateDot(ctx, dotID, func(d *cluster.Dot) bool {
		d.Seq++
		d.NewestCommit = commitID
		d.LastCommitAt = s.cfg.Now()
		return true
	})
}

func (s *Store) DeleteCommit(ctx context.Context, id string) error {
	rec, err := s.holder(ctx, dotOf(id))
	if errors.Is(err, zfsd.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	c, _, err := s.client(ctx, rec.Master)
	if err != nil {
		return err
	}
	if err := c.DeleteCommit(ctx, id); err != nil {
		return err
	}
	if rec.Deleted {
		// The dot's last commit may just have gone, taking the dot.
		return s.dropCopies(ctx, rec)
	}
	return nil
}

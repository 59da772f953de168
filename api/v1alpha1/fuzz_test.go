package v1alpha1

import (
	"encoding/json"
	"testing"
	"time"
)

// FuzzTimestamp checks the view's times as the API server hands them back:
// whatever is read writes out again, and reads back as the same instant.
func FuzzTimestamp(f *testing.F) {
	for _, s := range []string{`"2024-05-01T10:20:30.123456789Z"`, `"2024-05-01T12:20:30+02:00"`, `"2024-05-01T10:20:30.5Z"`, `null`,
		`"0000-01-01T00:00:00Z"`, `"2024-13-01T00:00:00Z"`, `1714558830`, `""`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var ts Timestamp
		if err := json.Unmarshal(b, &ts); err != nil {
			return
		}
		out, err := json.Marshal(ts)
		if err != nil {
			t.Fatalf("%s reads as %v, which cannot be written back: %v", b, ts.Time, err)
		}
		var again Timestamp
		if err := json.Unmarshal(out, &again); err != nil || !again.Equal(ts.Time) {
			t.Fatalf("%s reads as %v, written %s, read back as %v, %v", b, ts.Time, out, again.Time, err)
		}
		if again.Location() != time.UTC {
			t.Fatalf("%s written as %s, not in UTC", b, out)
		}
		if p := NewTimestamp(ts.Time); (p == nil) != ts.IsZero() || !TimeOf(p).Equal(ts.Time) {
			t.Fatalf("NewTimestamp(%v) = %v", ts.Time, p)
		}
	})
}

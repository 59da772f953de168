package v1alpha1

import (
	"encoding/json"
	"fmt"
	"time"
)

// Timestamp is a time as the view keeps it: RFC 3339 in UTC to the
// nanosecond, as Go writes a time.Time. metav1.Time would cut it to the
// second (a heartbeat's age is compared with the unreachable period), and
// metav1.MicroTime reads only six-digit fractions, so neither reads back
// the records the view wrote before this package existed.
//
// +kubebuilder:validation:Type=string
// +kubebuilder:validation:Format=date-time
// +kubebuilder:object:generate=false
type Timestamp struct {
	time.Time `json:"-"`
}

// NewTimestamp returns t as a Timestamp, or nil for the zero time, which
// the view leaves out.
func NewTimestamp(t time.Time) *Timestamp {
	if t.IsZero() {
		return nil
	}
	return &Timestamp{Time: t.UTC()}
}

// TimeOf returns the time ts holds, in UTC; the zero time for nil.
func TimeOf(ts *Timestamp) time.Time {
	if ts == nil {
		return time.Time{}
	}
	return ts.UTC()
}

// MarshalJSON writes the time as time.Time does, in UTC.
func (t Timestamp) MarshalJSON() ([]byte, error) {
	return json.Marshal(t.UTC())
}

// UnmarshalJSON reads any RFC 3339 time; null leaves it zero.
func (t *Timestamp) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		t.Time = time.Time{}
		return nil
	}
	var v time.Time
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	// MarshalJSON writes UTC, and an offset can carry a time at the edge
	// of year 0 or 9999 into a year RFC 3339 cannot hold: such a record
	// would read and then never write back (found by FuzzTimestamp).
	if y := v.UTC().Year(); y < 0 || y > 9999 {
		return fmt.Errorf("time %s is outside years 0 to 9999 in UTC", b)
	}
	t.Time = v
	return nil
}

// DeepCopyInto copies t into out: a time.Time is a value.
func (t *Timestamp) DeepCopyInto(out *Timestamp) { *out = *t }

// DeepCopy returns a copy of t.
func (t *Timestamp) DeepCopy() *Timestamp {
	if t == nil {
		return nil
	}
	out := *t
	return &out
}

package blobs

import (
	"bytes"
	"errors"
	"io"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// segmentsOf is a step yielding segs one a call, then end.
func segmentsOf(segs []string, end error) func([]byte) ([]byte, error) {
	i := 0
	return func(buf []byte) ([]byte, error) {
		if i == len(segs) {
			return nil, end
		}
		b := append(buf[:0], segs[i]...)
		i++
		if i == len(segs) && end == io.EOF {
			return b, io.EOF
		}
		return b, nil
	}
}

func TestAhead(t *testing.T) {
	boom := errors.New("boom")
	for _, tc := range []struct {
		name    string
		segs    []string
		end     error
		readLen int
		want    string
		wantErr error
	}{
		{"empty", nil, io.EOF, 8, "", nil},
		{"one read fills p across segments", []string{"abc", "de", "fgh"}, io.EOF, 64, "abcdefgh", nil},
		{"small reads", []string{"abc", "de", "fgh"}, io.EOF, 1, "abcdefgh", nil},
		{"more segments than the depth", []string{"a", "b", "c", "d", "e", "f", "g", "h", "i"}, io.EOF, 2, "abcdefghi", nil},
		{"an error after the data", []string{"abc", "de"}, boom, 4, "abcde", boom},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := newAhead(16, segmentsOf(tc.segs, tc.end))
			defer a.Close()
			var got bytes.Buffer
			p := make([]byte, tc.readLen)
			var err error
			for {
				var n int
				n, err = a.Read(p)
				got.Write(p[:n])
				if err != nil {
					break
				}
				if tc.readLen >= len(tc.want) && tc.want != "" {
					assert.Equal(t, len(tc.want), n, "a Read fills p while there is more")
				}
			}
			if tc.wantErr == nil {
				assert.Equal(t, io.EOF, err)
			} else {
				assert.ErrorIs(t, err, tc.wantErr)
			}
			assert.Equal(t, tc.want, got.String())
		})
	}
}

func TestAheadWriteTo(t *testing.T) {
	boom := errors.New("boom")
	for _, tc := range []struct {
		name    string
		segs    []string
		end     error
		want    string
		wantErr error
	}{
		{"all", []string{"abc", "de", "f", "g", "h", "i"}, io.EOF, "abcdefghi", nil},
		{"empty", nil, io.EOF, "", nil},
		{"an error after the data", []string{"abc"}, boom, "abc", boom},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := newAhead(16, segmentsOf(tc.segs, tc.end))
			defer a.Close()
			var got bytes.Buffer
			n, err := io.Copy(&got, a)
			if tc.wantErr == nil {
				require.NoError(t, err)
			} else {
				require.ErrorIs(t, err, tc.wantErr)
			}
			assert.EqualValues(t, len(tc.want), n)
			assert.Equal(t, tc.want, got.String())
		})
	}
}

// TestAheadCloseStops: Close returns (the goroutine ended) whether the
// reader read nothing, part, or all of the stream, and twice.
func TestAheadCloseStops(t *testing.T) {
	endless := func(buf []byte) ([]byte, error) { return append(buf[:0], "xyz"...), nil }
	for _, reads := range []int{0, 1, 100} {
		a := newAhead(16, endless)
		p := make([]byte, 2)
		for range reads {
			_, err := a.Read(p)
			require.NoError(t, err)
		}
		a.Close()
		a.Close()
		select {
		case <-a.done:
		default:
			t.Fatalf("after %d reads: the goroutine is still running", reads)
		}
	}
}

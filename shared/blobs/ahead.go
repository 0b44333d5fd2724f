package blobs

import "io"

// A blob is sealed (or opened) one segment ahead of the object store, on
// a goroutine of its own: the store's loop (SHA-256 of each chunk, the
// publish, or the chunk pipe of a get) and AES-GCM then run side by side
// instead of in turn. The segment buffers are few and fixed (aheadDepth),
// so memory stays a few segments whatever the blob's size.

// aheadDepth is how many segments may be ready and not yet read.
const aheadDepth = 4

// segment is one step's output: its bytes (in a buffer of the ahead's),
// and the error that ends the stream after them (io.EOF at the end).
type segment struct {
	b   []byte
	err error
}

// ahead runs step on its goroutine, each call filling one buffer, and
// reads what they made. Close stops it and waits for it: whoever makes an
// ahead closes it.
type ahead struct {
	ready chan segment
	free  chan []byte
	stop  chan struct{}
	done  chan struct{}
	cur   segment
	buf   []byte // cur's buffer, to give back
}

// newAhead starts step: it fills a buffer of bufLen bytes (its result may
// be shorter) and returns what it made, or an error after which it is not
// called again (io.EOF once the last bytes are out).
func newAhead(bufLen int, step func(buf []byte) ([]byte, error)) *ahead {
	a := &ahead{ready: make(chan segment, aheadDepth), free: make(chan []byte, aheadDepth+1),
		stop: make(chan struct{}), done: make(chan struct{})}
	for range aheadDepth + 1 { // one more than can wait: the one being read
		a.free <- make([]byte, bufLen)
	}
	go a.run(step)
	return a
}

func (a *ahead) run(step func([]byte) ([]byte, error)) {
	defer close(a.done)
	for {
		var buf []byte
		select {
		case buf = <-a.free:
		case <-a.stop:
			return
		}
		b, err := step(buf[:cap(buf)])
		select {
		case a.ready <- segment{b: b, err: err}:
		case <-a.stop:
			return
		}
		if err != nil {
			return
		}
	}
}

// Read fills p unless the stream ends: the object store makes one chunk
// of each Read.
func (a *ahead) Read(p []byte) (int, error) {
	n := 0
	for n < len(p) {
		if len(a.cur.b) == 0 {
			if a.cur.err != nil {
				break
			}
			if a.buf != nil {
				a.free <- a.buf // never blocks: the channel holds every buffer
				a.buf = nil
			}
			a.cur = <-a.ready
			a.buf = a.cur.b[:0]
			continue
		}
		k := copy(p[n:], a.cur.b)
		a.cur.b = a.cur.b[k:]
		n += k
	}
	if n == 0 {
		return 0, a.cur.err
	}
	return n, nil
}

// WriteTo writes each segment to w as it comes (io.Copy uses it: no
// buffer of its own, no copy).
func (a *ahead) WriteTo(w io.Writer) (int64, error) {
	var n int64
	for {
		if len(a.cur.b) == 0 {
			if a.cur.err != nil {
				if a.cur.err == io.EOF {
					return n, nil
				}
				return n, a.cur.err
			}
			if a.buf != nil {
				a.free <- a.buf
				a.buf = nil
			}
			a.cur = <-a.ready
			a.buf = a.cur.b[:0]
			continue
		}
		k, err := w.Write(a.cur.b)
		n += int64(k)
		a.cur.b = a.cur.b[k:]
		if err != nil {
			return n, err
		}
	}
}

// Close stops the goroutine and waits for it (after a step that is
// running returns).
func (a *ahead) Close() {
	select {
	case <-a.stop:
	default:
		close(a.stop)
	}
	<-a.done
}

// sealAhead is the sealed stream of src under key, sealed ahead.
func sealAhead(src io.Reader, key []byte) (*ahead, error) {
	s, err := newSealer(src, key)
	if err != nil {
		return nil, err
	}
	return newAhead(sealedSegment, func(buf []byte) ([]byte, error) {
		if s.done {
			return nil, io.EOF
		}
		s.buf = buf[:0]
		if err := s.next(); err != nil {
			return nil, err
		}
		out := s.out
		s.out = nil
		if s.done {
			return out, io.EOF
		}
		return out, nil
	}), nil
}

// openAhead is the plaintext of the sealed stream src under key, opened
// ahead.
func openAhead(src io.Reader, key []byte) (*ahead, error) {
	o, err := newOpener(src, key)
	if err != nil {
		return nil, err
	}
	return newAhead(sealedSegment, func(buf []byte) ([]byte, error) {
		o.sealed = buf
		if err := o.next(); err != nil {
			return nil, err
		}
		out := o.out
		o.out = nil
		if o.done {
			return out, io.EOF
		}
		return out, nil
	}), nil
}

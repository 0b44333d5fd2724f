package gateway

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
)

// objectScanner checks, as a body passes through it (it is the writer of
// an io.TeeReader in front of the upload), that the body is one JSON
// object, and keeps the raw text of the top-level members the gateway
// reads (model, stream, …). Nothing else is kept: memory stays at the kept
// members however large the body, so a 64 MiB prompt streams into
// fed_blobs without being held (DESIGN §3.7). The kept members, as a small
// object of their own, decode with encoding/json exactly as the whole body
// would into the same struct: names match case-insensitively, a repeated
// name's last value wins, a wrong type is the same error.
//
// encoding/json's Decoder cannot do this: it holds each value it reads
// whole, and a huge string value is the one thing a large body has.
type objectScanner struct {
	fields []string // the JSON names kept, as encoding/json matches them
	kept   []byte   // {"name":value,… of the kept members, without the closing }
	off    int64    // bytes scanned, for error texts

	state  scanState
	stack  []byte // open containers: '{' or '['
	lit    string // the rest of a literal being read (true, false, null)
	hex    int    // hex digits still due in a \u escape
	isKey  bool   // the string being read is a member name
	key    []byte // a top-level member's name as written (quotes included), up to maxKeyLen
	long   bool   // that name is longer than maxKeyLen: not one of fields
	keep   bool   // the top-level value being read is kept
	member bool   // kept has a member: the next one needs a comma
	err    error
}

type scanState uint8

const (
	scanStart      scanState = iota // before the object
	scanKeyOrEnd                    // after {
	scanKey                         // after , in an object
	scanColon                       // after a member name
	scanValue                       // after : or , in an array
	scanValueOrEnd                  // after [
	scanAfter                       // after a value
	scanString                      // in a string
	scanEscape                      // after \ in a string
	scanHex                         // in the hex digits of \u
	scanLiteral                     // in true, false or null
	scanMinus                       // after the - of a number
	scanZero                        // a number's leading 0
	scanInt                         // a number's integer digits
	scanDot                         // after a number's .
	scanFrac                        // a number's fraction digits
	scanE                           // after a number's e
	scanESign                       // after the exponent's sign
	scanExp                         // a number's exponent digits
	scanEnd                         // after the object: only whitespace
)

const (
	// maxKeptLen bounds what the scanner keeps: the members the gateway
	// reads are ids, flags and short options.
	maxKeptLen = 64 << 10
	// maxKeyLen is the longest name worth comparing: any longer cannot
	// spell one of the fields, escapes and all.
	maxKeyLen = 256
	// maxDepth is encoding/json's nesting limit: deeper is an error there
	// too, and the scanner's stack stays small.
	maxDepth = 10000
)

// jsonError is a body that is not one JSON object (a 400 about the
// caller's own bytes).
type jsonError struct{ msg string }

func (e *jsonError) Error() string { return e.msg }

func newObjectScanner(fields []string) *objectScanner {
	return &objectScanner{fields: fields, kept: append(make([]byte, 0, 256), '{')}
}

// Write scans p; its error (sticky) is the first thing wrong with the body.
func (s *objectScanner) Write(p []byte) (int, error) {
	if s.err != nil {
		return 0, s.err
	}
	start := 0 // where in p the kept value's bytes begin, while s.keep
	for i := 0; i < len(p); i++ {
		c := p[i]
		switch s.state {
		case scanString:
			// the bulk of a large body: skip to the next byte that matters
			j := skipPlain(p, i)
			s.addKey(p[i:j])
			if j == len(p) {
				i = j
				continue
			}
			i, c = j, p[j]
			s.addKey(p[j : j+1])
			switch {
			case c == '"':
				s.endString(p, i, &start)
			case c == '\\':
				s.state = scanEscape
			default:
				return s.fail("invalid character %q in string literal", c)
			}
		case scanEscape:
			s.addKey(p[i : i+1])
			switch c {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				s.state = scanString
			case 'u':
				s.state, s.hex = scanHex, 4
			default:
				return s.fail("invalid character %q in string escape code", c)
			}
		case scanHex:
			s.addKey(p[i : i+1])
			if !isHex(c) {
				return s.fail("invalid character %q in \\u hexadecimal character escape", c)
			}
			if s.hex--; s.hex == 0 {
				s.state = scanString
			}
		case scanLiteral:
			if c != s.lit[0] {
				return s.fail("invalid character %q in literal", c)
			}
			if s.lit = s.lit[1:]; s.lit == "" {
				s.endValue(p, i+1, &start)
			}
		case scanMinus, scanZero, scanInt, scanDot, scanFrac, scanE, scanESign, scanExp:
			next, ok := numberStep(s.state, c)
			if ok {
				s.state = next
				continue
			}
			if s.state == scanMinus || s.state == scanDot || s.state == scanE || s.state == scanESign {
				return s.fail("invalid character %q in numeric literal", c)
			}
			s.endValue(p, i, &start) // the number ended before c: scan c again
			i--
		default:
			if c == ' ' || c == '\t' || c == '\n' || c == '\r' {
				continue
			}
			if err := s.structural(p, i, c, &start); err != nil {
				return 0, err
			}
		}
		if s.err != nil {
			return 0, s.err
		}
	}
	if s.keep {
		s.add(p[start:])
	}
	s.off += int64(len(p))
	if s.err != nil {
		return 0, s.err
	}
	return len(p), nil
}

// structural handles c (not whitespace) outside strings, numbers and
// literals.
func (s *objectScanner) structural(p []byte, i int, c byte, start *int) error {
	switch s.state {
	case scanStart:
		if c != '{' {
			_, err := s.fail("invalid character %q looking for the beginning of an object", c)
			return err
		}
		s.stack, s.state = append(s.stack, '{'), scanKeyOrEnd
		return nil
	case scanEnd:
		_, err := s.fail("invalid character %q after the top-level object", c)
		return err
	case scanKeyOrEnd, scanKey:
		switch {
		case c == '"':
			s.beginString(true)
			s.addKey(p[i : i+1])
			return nil
		case c == '}' && s.state == scanKeyOrEnd:
			s.close(p, i, start)
			return nil
		}
		_, err := s.fail("invalid character %q looking for the beginning of an object key string", c)
		return err
	case scanColon:
		if c != ':' {
			_, err := s.fail("invalid character %q after object key", c)
			return err
		}
		s.state = scanValue
		if len(s.stack) == 1 && s.wanted() {
			s.keepMember()
			*start = i + 1
		}
		return nil
	case scanValueOrEnd:
		if c == ']' {
			s.close(p, i, start)
			return nil
		}
		return s.beginValue(c)
	case scanValue:
		return s.beginValue(c)
	case scanAfter:
		top := s.stack[len(s.stack)-1]
		switch {
		case c == ',' && top == '{':
			s.state = scanKey
		case c == ',':
			s.state = scanValue
		case c == '}' && top == '{', c == ']' && top == '[':
			s.close(p, i, start)
		default:
			what := "object key:value pair"
			if top == '[' {
				what = "array element"
			}
			_, err := s.fail("invalid character %q after "+what, c)
			return err
		}
		return nil
	}
	_, err := s.fail("invalid character %q", c)
	return err
}

// beginValue starts the value c begins.
func (s *objectScanner) beginValue(c byte) error {
	switch {
	case c == '{' || c == '[':
		if len(s.stack) >= maxDepth {
			s.err = &jsonError{fmt.Sprintf("exceeded max depth of %d", maxDepth)}
			return s.err
		}
		s.stack, s.state = append(s.stack, c), scanKeyOrEnd
		if c == '[' {
			s.state = scanValueOrEnd
		}
	case c == '"':
		s.beginString(false)
	case c == 't':
		s.state, s.lit = scanLiteral, "rue"
	case c == 'f':
		s.state, s.lit = scanLiteral, "alse"
	case c == 'n':
		s.state, s.lit = scanLiteral, "ull"
	case c == '-':
		s.state = scanMinus
	case c == '0':
		s.state = scanZero
	case c >= '1' && c <= '9':
		s.state = scanInt
	default:
		_, err := s.fail("invalid character %q looking for beginning of value", c)
		return err
	}
	return nil
}

func (s *objectScanner) beginString(isKey bool) {
	s.state, s.isKey = scanString, isKey
	if isKey && len(s.stack) == 1 {
		s.key, s.long = s.key[:0], false
	}
}

// endString ends the string whose closing quote is p[i].
func (s *objectScanner) endString(p []byte, i int, start *int) {
	if s.isKey {
		s.state = scanColon
		return
	}
	s.endValue(p, i+1, start)
}

// close ends the container p[i] closes.
func (s *objectScanner) close(p []byte, i int, start *int) {
	s.stack = s.stack[:len(s.stack)-1]
	if len(s.stack) == 0 {
		s.state = scanEnd
		return
	}
	s.endValue(p, i+1, start)
}

// endValue ends a value whose last byte is p[end-1]: a kept top-level
// value's bytes up to there are kept.
func (s *objectScanner) endValue(p []byte, end int, start *int) {
	s.state = scanAfter
	if len(s.stack) == 1 && s.keep {
		s.add(p[*start:end])
		s.keep = false
	}
}

// addKey collects a top-level member's name as it is read.
func (s *objectScanner) addKey(b []byte) {
	if !s.isKey || len(s.stack) != 1 || s.long {
		return
	}
	if len(s.key)+len(b) > maxKeyLen {
		s.long = true
		return
	}
	s.key = append(s.key, b...)
}

// wanted reports whether the member name just read is one of fields.
func (s *objectScanner) wanted() bool {
	if s.long {
		return false
	}
	var name string
	if json.Unmarshal(s.key, &name) != nil {
		return false
	}
	for _, f := range s.fields {
		if strings.EqualFold(name, f) {
			return true
		}
	}
	return false
}

// keepMember starts keeping a member: its name and colon.
func (s *objectScanner) keepMember() {
	if s.member {
		s.add([]byte{','})
	}
	s.member, s.keep = true, true
	s.add(s.key)
	s.add([]byte{':'})
}

func (s *objectScanner) add(b []byte) {
	if s.err != nil {
		return
	}
	if len(s.kept)+len(b) > maxKeptLen {
		s.err = &jsonError{fmt.Sprintf("the members %s take more than %d bytes", strings.Join(s.fields, ", "), maxKeptLen)}
		return
	}
	s.kept = append(s.kept, b...)
}

// fail records a syntax error at the current byte.
func (s *objectScanner) fail(format string, c byte) (int, error) {
	if s.err == nil {
		s.err = &jsonError{fmt.Sprintf(format, c)}
	}
	return 0, s.err
}

// Close checks that the body ended with its object.
func (s *objectScanner) Close() error {
	if s.err == nil && s.state != scanEnd {
		s.err = &jsonError{"unexpected end of JSON input"}
	}
	return s.err
}

// decode decodes the kept members into v (after Close).
func (s *objectScanner) decode(v any) error {
	return json.Unmarshal(append(s.kept, '}'), v)
}

// skipPlain is the index of the first byte from j on that ends a run of
// plain string bytes ('"', '\\' or a control character), or len(p). It
// tests 8 bytes at a time (a 64 MiB prompt is one string): a word has such
// a byte iff one of the has-zero / has-less-than tests below is set (they
// are exact about whether, not about where; the byte loop finds where).
func skipPlain(p []byte, j int) int {
	const ones, highs = 0x0101010101010101, 0x8080808080808080
	for ; j+8 <= len(p); j += 8 {
		x := binary.LittleEndian.Uint64(p[j:])
		q, b := x^(ones*'"'), x^(ones*'\\')
		if ((q-ones)&^q|(b-ones)&^b|(x-ones*0x20)&^x)&highs != 0 {
			break
		}
	}
	for j < len(p) && p[j] != '"' && p[j] != '\\' && p[j] >= 0x20 {
		j++
	}
	return j
}

// numberStep is the state after c in a number, false when c ends it.
func numberStep(st scanState, c byte) (scanState, bool) {
	digit := c >= '0' && c <= '9'
	switch st {
	case scanMinus:
		if c == '0' {
			return scanZero, true
		}
		if digit {
			return scanInt, true
		}
	case scanZero, scanInt:
		switch {
		case digit && st == scanInt:
			return scanInt, true
		case c == '.':
			return scanDot, true
		case c == 'e' || c == 'E':
			return scanE, true
		}
	case scanDot, scanFrac:
		if digit {
			return scanFrac, true
		}
		if st == scanFrac && (c == 'e' || c == 'E') {
			return scanE, true
		}
	case scanE:
		if c == '+' || c == '-' {
			return scanESign, true
		}
		if digit {
			return scanExp, true
		}
	case scanESign, scanExp:
		if digit {
			return scanExp, true
		}
	}
	return st, false
}

func isHex(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
}

// jsonNames are the member names encoding/json decodes into the struct v
// points to (embedded structs' too), for an objectScanner.
func jsonNames(v any) []string {
	var names []string
	var walk func(t reflect.Type)
	walk = func(t reflect.Type) {
		for i := range t.NumField() {
			f := t.Field(i)
			tag := f.Tag.Get("json")
			name, _, _ := strings.Cut(tag, ",")
			switch {
			case name == "-":
			case f.Anonymous && tag == "" && f.Type.Kind() == reflect.Struct:
				walk(f.Type)
			case !f.IsExported():
			case name != "":
				names = append(names, name)
			default:
				names = append(names, f.Name)
			}
		}
	}
	walk(reflect.TypeOf(v).Elem())
	return names
}

package validate

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// Instruction is one Dockerfile instruction after line continuations are joined.
type Instruction struct {
	Line int    // 1-based line where it starts
	Cmd  string // upper-case: FROM, RUN, COPY, ...
	Args string
}

// Stage is one FROM ... block.
type Stage struct {
	Image, Name  string
	Instructions []Instruction
}

// ParseDockerfile splits src into build stages. It understands comments, parser
// directives, line continuations and ARG before the first FROM, which is all
// the ProManage Dockerfile uses (no heredocs).
func ParseDockerfile(src string) (pre []Instruction, stages []Stage, err error) {
	lines := strings.Split(src, "\n")
	var cur strings.Builder
	start := 0
	flush := func() {
		text := strings.TrimSpace(cur.String())
		cur.Reset()
		if text == "" {
			return
		}
		cmd, args, _ := strings.Cut(text, " ")
		in := Instruction{Line: start, Cmd: strings.ToUpper(cmd), Args: strings.TrimSpace(args)}
		if in.Cmd == "FROM" {
			f := strings.Fields(in.Args)
			var st Stage
			for i := 0; i < len(f); i++ {
				switch {
				case strings.HasPrefix(f[i], "--"):
				case strings.EqualFold(f[i], "AS") && i+1 < len(f):
					st.Name = f[i+1]
					i++
				case st.Image == "":
					st.Image = f[i]
				}
			}
			stages = append(stages, st)
			return
		}
		if len(stages) == 0 {
			pre = append(pre, in)
			return
		}
		stages[len(stages)-1].Instructions = append(stages[len(stages)-1].Instructions, in)
	}
	for i, l := range lines {
		trimmed := strings.TrimSpace(l)
		if cur.Len() == 0 && (trimmed == "" || strings.HasPrefix(trimmed, "#")) {
			continue
		}
		if cur.Len() > 0 && strings.HasPrefix(trimmed, "#") {
			continue // comment lines inside a continuation are skipped by Docker too
		}
		if cur.Len() == 0 {
			start = i + 1
		}
		if strings.HasSuffix(trimmed, "\\") {
			cur.WriteString(strings.TrimSuffix(trimmed, "\\") + " ")
			continue
		}
		cur.WriteString(trimmed)
		flush()
	}
	if cur.Len() > 0 {
		return nil, nil, fmt.Errorf("dockerfile: line %d: continuation at end of file", start)
	}
	if len(stages) == 0 {
		return nil, nil, fmt.Errorf("dockerfile: no FROM")
	}
	return pre, stages, nil
}

var (
	numericUser = regexp.MustCompile(`^(\d+)(:(\d+))?$`)
	urlArg      = regexp.MustCompile(`(?i)(https?|git|ssh)://|git@`)
	argRef      = regexp.MustCompile(`\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?`)
)

// CheckDockerfile returns the rules src breaks: multi-stage build, static
// (CGO_ENABLED=0, -trimpath, version/revision stamped) binary, distroless or
// scratch final stage with a numeric non-root USER, pinned base images, OCI
// labels, exec-form ENTRYPOINT, and no ADD of remote content.
func CheckDockerfile(src string) []string {
	pre, stages, err := ParseDockerfile(src)
	if err != nil {
		return []string{err.Error()}
	}
	var out []string
	bad := func(format string, a ...any) { out = append(out, fmt.Sprintf(format, a...)) }

	defaults := map[string]string{}
	for _, in := range pre {
		if in.Cmd == "ARG" {
			k, v, _ := strings.Cut(in.Args, "=")
			defaults[k] = v
		}
	}
	resolve := func(s string) string {
		return argRef.ReplaceAllStringFunc(s, func(m string) string {
			k := argRef.FindStringSubmatch(m)[1]
			if v, ok := defaults[k]; ok {
				return v
			}
			return m
		})
	}

	if len(stages) < 2 {
		bad("not a multi-stage build: the toolchain must not ship in the image")
	}
	names := map[string]bool{}
	for _, st := range stages {
		if st.Name != "" {
			names[st.Name] = true
		}
		img := resolve(st.Image)
		if names[img] || img == "scratch" {
			continue
		}
		// A tag says what an image is; the digest decides which image it is
		// (Renovate keeps both current, .github/renovate.json).
		switch {
		case strings.Contains(img, "$"):
			bad("base image %s depends on an ARG without default", st.Image)
		case !strings.Contains(img, "@sha256:"):
			bad("base image %s is not pinned by digest", st.Image)
		}
		switch {
		case !strings.Contains(img[strings.LastIndex(img, "/")+1:], ":"):
			bad("base image %s has no tag", st.Image)
		case strings.HasSuffix(strings.Split(img, "@")[0], ":latest"):
			bad("base image %s uses :latest", st.Image)
		}
	}

	final := stages[len(stages)-1]
	finalImg := resolve(final.Image)
	if finalImg != "scratch" && !strings.HasPrefix(finalImg, "gcr.io/distroless/") {
		bad("final stage is %s; want gcr.io/distroless/* or scratch", final.Image)
	}
	var user, entrypoint string
	labels := map[string]bool{}
	for _, in := range final.Instructions {
		switch in.Cmd {
		case "USER":
			user = in.Args
		case "ENTRYPOINT":
			entrypoint = in.Args
		case "RUN":
			bad("line %d: RUN in the final stage (distroless has no shell; build in an earlier stage)", in.Line)
		case "LABEL":
			for _, m := range regexp.MustCompile(`([A-Za-z0-9_.\-]+)=`).FindAllStringSubmatch(in.Args, -1) {
				labels[m[1]] = true
			}
		}
	}
	if m := numericUser.FindStringSubmatch(user); m == nil {
		bad("final stage USER %q must be numeric uid[:gid] (runAsNonRoot cannot check names)", user)
	} else if uid, _ := strconv.Atoi(m[1]); uid == 0 {
		bad("final stage runs as root (USER %s)", user)
	}
	if !strings.HasPrefix(entrypoint, "[") {
		bad("ENTRYPOINT must use exec form so the binary is PID 1 and receives SIGTERM, got %q", entrypoint)
	}
	for _, l := range []string{"org.opencontainers.image.version", "org.opencontainers.image.revision",
		"org.opencontainers.image.source", "org.opencontainers.image.created", "org.opencontainers.image.title"} {
		if !labels[l] {
			bad("final stage lacks label %s", l)
		}
	}

	var cgoOff, trimpath, stamped bool
	for _, st := range stages {
		for _, in := range st.Instructions {
			switch in.Cmd {
			case "ADD":
				if urlArg.MatchString(in.Args) {
					bad("line %d: ADD of remote content (%s); fetch in a RUN step with a checksum, or COPY", in.Line, in.Args)
				}
			case "ENV", "ARG", "RUN":
				if regexp.MustCompile(`\bCGO_ENABLED=0\b`).MatchString(in.Args) {
					cgoOff = true
				}
			}
			if in.Cmd == "RUN" && strings.Contains(in.Args, "go build") {
				trimpath = trimpath || strings.Contains(in.Args, "-trimpath")
				stamped = stamped || (strings.Contains(in.Args, "-X main.version=") && strings.Contains(in.Args, "-X main.revision="))
				if !strings.Contains(in.Args, "./cmd/promanage") {
					bad("line %d: go build does not build ./cmd/promanage", in.Line)
				}
			}
		}
	}
	if !cgoOff {
		bad("CGO_ENABLED=0 is not set: the binary must be static to run on distroless/static")
	}
	if !trimpath {
		bad("go build without -trimpath: the build is not reproducible")
	}
	if !stamped {
		bad("go build does not stamp -X main.version and -X main.revision")
	}
	return out
}

// flagd-eval answers flag evaluations with flagd's own Go evaluator (github.com/open-feature/flagd/core),
// so that Ferry's tests can compare Ferry's answers with flagd's on the same flags.json.
//
// Usage: flagd-eval FLAGS.json < requests > answers
//
// Each stdin line is a JSON object {"flag": KEY, "context": {...}} (the targeting key, if any, is the
// context's "targetingKey", as flagd receives it); each stdout line is the answer to the request on the
// same line: {"variant": V, "reason": R, "error": E}. The file is loaded the way flagd's file sync
// loads it (SetState with the whole document), and each request is resolved by the same code path
// that serves flagd's gRPC and OFREP evaluations (ResolveAsAnyValue).
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"

	"github.com/open-feature/flagd/core/pkg/evaluator"
	"github.com/open-feature/flagd/core/pkg/logger"
	"github.com/open-feature/flagd/core/pkg/store"
	"github.com/open-feature/flagd/core/pkg/sync"
	"go.uber.org/zap"
)

type request struct {
	Flag    string         `json:"flag"`
	Context map[string]any `json:"context"`
}

type answer struct {
	Variant string `json:"variant"`
	Reason  string `json:"reason"`
	Error   string `json:"error,omitempty"`
}

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: flagd-eval FLAGS.json < requests")
		os.Exit(2)
	}
	data, err := os.ReadFile(os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	log := logger.NewLogger(zap.NewNop(), false)
	ev := evaluator.NewJSON(log, store.NewFlags())
	if err := ev.SetState(sync.DataSync{FlagData: string(data), Source: os.Args[1]}); err != nil {
		fmt.Fprintln(os.Stderr, "flagd refused the flags file:", err)
		os.Exit(1)
	}

	in := bufio.NewScanner(os.Stdin)
	in.Buffer(make([]byte, 1<<20), 1<<24)
	out := bufio.NewWriter(os.Stdout)
	defer out.Flush()
	enc := json.NewEncoder(out)
	for in.Scan() {
		var req request
		if err := json.Unmarshal(in.Bytes(), &req); err != nil {
			fmt.Fprintln(os.Stderr, "bad request line:", err)
			os.Exit(1)
		}
		if req.Context == nil {
			req.Context = map[string]any{}
		}
		res := ev.ResolveAsAnyValue(context.Background(), "ferry-test", req.Flag, req.Context)
		a := answer{Variant: res.Variant, Reason: res.Reason}
		if res.Error != nil {
			a.Error = res.Error.Error()
		}
		if err := enc.Encode(a); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	}
	if err := in.Err(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

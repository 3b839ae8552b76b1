// kstatus prints the verdict of sigs.k8s.io/cli-utils' kstatus library (what Flux, kpt and
// cli-utils' own apply wait on) for each Kubernetes object read from standard input.
//
// Input: JSON objects, one after another (as `kubectl get -o json` prints them; a List's items
// count one by one). Output: one JSON line per object:
//
//	{"kind":"ConfigEntry","namespace":"ns","name":"x","status":"Current","message":"Resource is Ready"}
//
// A status of "Error" with the library's error as message means kstatus itself could not read
// the object. Exit status 2: the input was not JSON objects.
package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
)

type verdict struct {
	Kind      string `json:"kind"`
	Namespace string `json:"namespace,omitempty"`
	Name      string `json:"name"`
	Status    string `json:"status"`
	Message   string `json:"message"`
}

// compute decodes one object the way client-go does (integers stay integers, which kstatus
// needs for metadata.generation) and asks kstatus for its verdict.
func compute(raw json.RawMessage) verdict {
	u := &unstructured.Unstructured{}
	if err := u.UnmarshalJSON(raw); err != nil {
		return verdict{Status: "Error", Message: err.Error()}
	}
	v := verdict{Kind: u.GetKind(), Namespace: u.GetNamespace(), Name: u.GetName()}
	result, err := status.Compute(u)
	if err != nil {
		v.Status, v.Message = "Error", err.Error()
		return v
	}
	v.Status, v.Message = result.Status.String(), result.Message
	return v
}

func main() {
	decoder := json.NewDecoder(os.Stdin)
	encoder := json.NewEncoder(os.Stdout)
	for {
		var raw json.RawMessage
		if err := decoder.Decode(&raw); errors.Is(err, io.EOF) {
			return
		} else if err != nil {
			fmt.Fprintf(os.Stderr, "kstatus: standard input is not a stream of JSON objects: %v\n", err)
			os.Exit(2)
		}
		objects := []json.RawMessage{raw}
		var list struct {
			Items []json.RawMessage `json:"items"`
		}
		if err := json.Unmarshal(raw, &list); err == nil && list.Items != nil {
			objects = list.Items
		}
		for _, o := range objects {
			if err := encoder.Encode(compute(o)); err != nil {
				fmt.Fprintf(os.Stderr, "kstatus: %v\n", err)
				os.Exit(1)
			}
		}
	}
}

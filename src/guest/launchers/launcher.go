// Isola's ActionLoop launcher for Go functions, built into one binary with the function's own
// `package main` that defines func Main(map[string]interface{}) map[string]interface{}.
//
// It serves activations: one JSON line in on stdin, one JSON line out on fd 3, and the
// end-of-activation sentinel on stdout and stderr after each.
package main

import (
	"bufio"
	"bytes"
	crand "crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"math/rand"
	"os"
	"runtime/debug"
	"strings"
)

const sentinel = "XXX_THE_END_OF_A_WHISK_ACTIVATION_XXX"

// seed reseeds math/rand's shared generator: Go 1.19 starts it from a fixed seed, and a snapshot
// clone would otherwise repeat its parent's numbers.
func seed(extra []byte) {
	fresh := make([]byte, 16)
	_, _ = crand.Read(fresh)
	sum := sha256.Sum256(append(extra, fresh...))
	rand.Seed(int64(binary.LittleEndian.Uint64(sum[:8])))
}

// call runs the function, turning a panic into an error result with its stack on stderr.
func call(args map[string]interface{}) (line []byte) {
	defer func() {
		if recovered := recover(); recovered != nil {
			fmt.Fprintf(os.Stderr, "panic: %v\n\n%s", recovered, debug.Stack())
			line, _ = json.Marshal(map[string]string{"error": fmt.Sprint(recovered)})
		}
	}()
	var out bytes.Buffer
	encoder := json.NewEncoder(&out)
	encoder.SetEscapeHTML(false)
	if err := encoder.Encode(Main(args)); err != nil {
		line, _ = json.Marshal(map[string]string{"error": "The result is not JSON: " + err.Error()})
		return line
	}
	return bytes.TrimRight(out.Bytes(), "\n")
}

func main() {
	seed(nil)
	results := os.NewFile(3, "results")
	if os.Getenv("__OW_WAIT_FOR_ACK") != "" {
		_, _ = results.WriteString("{\"ok\": true}\n")
	}
	input := bufio.NewReaderSize(os.Stdin, 1<<20)
	for {
		raw, err := input.ReadBytes('\n')
		if len(bytes.TrimSpace(raw)) > 0 {
			serve(raw, results)
		}
		if err == io.EOF {
			return
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "reading stdin:", err)
			os.Exit(1)
		}
	}
}

func serve(raw []byte, results *os.File) {
	var request map[string]interface{}
	if err := json.Unmarshal(raw, &request); err != nil {
		fmt.Fprintln(os.Stderr, "a request that is not JSON:", err)
		os.Exit(1)
	}
	if request["__isola"] == "reseed" {
		entropy, _ := request["entropy"].(string)
		decoded, _ := base64.StdEncoding.DecodeString(entropy)
		seed(decoded)
		_, _ = results.WriteString("{\"ok\": true}\n")
		return
	}
	for key, value := range request {
		if key == "value" {
			continue
		}
		text, isString := value.(string)
		if !isString {
			encoded, _ := json.Marshal(value)
			text = string(encoded)
		}
		_ = os.Setenv("__OW_"+strings.ToUpper(key), text)
	}
	args, isObject := request["value"].(map[string]interface{})
	if !isObject {
		args = map[string]interface{}{}
	}
	line := call(args)
	_ = os.Stdout.Sync()
	_ = os.Stderr.Sync()
	_, _ = results.Write(append(line, '\n'))
	fmt.Fprintln(os.Stdout, sentinel)
	fmt.Fprintln(os.Stderr, sentinel)
}

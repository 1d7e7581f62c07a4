package main

// A minimal ActionLoop loop for the bare Go peer (see launcher.py), built with the function.

import (
	"bufio"
	"encoding/json"
	"os"
)

func main() {
	out := os.NewFile(3, "fd3")
	if os.Getenv("__OW_WAIT_FOR_ACK") != "" {
		out.WriteString("{\"ok\": true}\n")
	}
	in := bufio.NewReaderSize(os.Stdin, 1<<20)
	for {
		line, err := in.ReadBytes('\n')
		if len(line) > 0 {
			var request struct {
				Value map[string]interface{} `json:"value"`
			}
			if json.Unmarshal(line, &request) == nil {
				if request.Value == nil {
					request.Value = map[string]interface{}{}
				}
				result, _ := json.Marshal(Main(request.Value))
				out.Write(append(result, '\n'))
				os.Stdout.WriteString("XXX_THE_END_OF_A_WHISK_ACTIVATION_XXX\n")
				os.Stderr.WriteString("XXX_THE_END_OF_A_WHISK_ACTIVATION_XXX\n")
			}
		}
		if err != nil {
			return
		}
	}
}

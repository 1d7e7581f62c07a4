package main

func Main(args map[string]interface{}) map[string]interface{} {
	name, _ := args["name"].(string)
	if name == "" {
		name = "world"
	}
	return map[string]interface{}{"greeting": "Hello " + name}
}

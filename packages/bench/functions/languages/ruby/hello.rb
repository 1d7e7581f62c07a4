def main(args)
  name = args["name"]
  { "greeting" => "Hello #{name.nil? || name == '' ? 'world' : name}" }
end

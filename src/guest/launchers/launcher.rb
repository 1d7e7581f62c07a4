# Isola's ActionLoop launcher for Ruby functions.
#
# Loads the function from main.rb beside this file, then serves activations: one JSON line in on
# stdin, one JSON line out on fd 3, and the end-of-activation sentinel on stdout and stderr after
# each. Usage: ruby --disable-gems launcher.rb <function name>
#
# Started ahead of its function (a blank sandbox's runtime, __ISOLA_WAIT_FOR_LOAD set), it waits for
# a line {"__isola": "load", "dir": ..., "args": [<function name>], "env": {...}} on stdin and loads
# the function from that directory instead.
require 'json'
require 'base64'

SENTINEL = 'XXX_THE_END_OF_A_WHISK_ACTIVATION_XXX'
Encoding.default_external = Encoding::UTF_8
Encoding.default_internal = Encoding::UTF_8
$stdin.set_encoding(Encoding::UTF_8)
$stdout.sync = true
$stderr.sync = true

results = IO.new(3, 'w')
results.set_encoding(Encoding::UTF_8)

def __isola_reseed(request, results)
  # A snapshot clone: every clone would otherwise draw the same numbers.
  srand(Base64.decode64(request['entropy'].to_s).unpack1('H*').to_i(16) ^ Random.new_seed)
  results.write("{\"ok\": true}\n")
  results.flush
end

here = __dir__
name = ARGV[0] || 'main'
if ENV.delete('__ISOLA_WAIT_FOR_LOAD')
  loaded = false
  while (raw = $stdin.gets)
    next if raw.strip.empty?

    request = JSON.parse(raw)
    if request['__isola'] == 'reseed'
      __isola_reseed(request, results)
    elsif request['__isola'] == 'load'
      here = request['dir']
      Dir.chdir(here)
      (request['env'] || {}).each { |key, value| ENV[key] = value }
      name = (request['args'] || [])[0] || 'main'
      loaded = true
      break
    end
  end
  exit!(0) unless loaded
end

begin
  load File.join(here, 'main.rb')
  unless respond_to?(name, true)
    raise NameError, "The function has no entry point \"#{name}\": define def #{name}(args) in main.rb."
  end
rescue Exception => e # rubocop:disable Lint/RescueException -- any load failure is reported
  $stderr.puts(e.full_message(highlight: false))
  exit!(1)
end

if ENV['__OW_WAIT_FOR_ACK'] && !ENV['__OW_WAIT_FOR_ACK'].empty?
  results.write("{\"ok\": true}\n")
  results.flush
end

while (raw = $stdin.gets)
  next if raw.strip.empty?

  request = JSON.parse(raw)
  if request['__isola'] == 'reseed'
    __isola_reseed(request, results)
    next
  end
  request.each do |key, value|
    ENV["__OW_#{key.upcase}"] = value.is_a?(String) ? value : JSON.generate(value) unless key == 'value'
  end
  args = request['value'].is_a?(Hash) ? request['value'] : {}
  begin
    line = JSON.generate(send(name, args))
  rescue Exception => e # rubocop:disable Lint/RescueException -- only this activation fails
    raise if e.is_a?(SystemExit)

    $stderr.puts(e.full_message(highlight: false))
    line = JSON.generate({ 'error' => e.message.empty? ? e.class.name : e.message })
  end
  $stdout.flush
  $stderr.flush
  results.write("#{line}\n")
  results.flush
  $stdout.write("#{SENTINEL}\n")
  $stderr.write("#{SENTINEL}\n")
end

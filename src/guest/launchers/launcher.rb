# Isola's ActionLoop launcher for Ruby functions.
#
# Loads the function from main.rb beside this file, then serves activations: one JSON line in on
# stdin, one JSON line out on fd 3, and the end-of-activation sentinel on stdout and stderr after
# each. Usage: ruby --disable-gems launcher.rb <function name>
require 'json'
require 'base64'

SENTINEL = 'XXX_THE_END_OF_A_WHISK_ACTIVATION_XXX'
Encoding.default_external = Encoding::UTF_8
Encoding.default_internal = Encoding::UTF_8
$stdin.set_encoding(Encoding::UTF_8)
$stdout.sync = true
$stderr.sync = true

name = ARGV[0] || 'main'
begin
  load File.join(__dir__, 'main.rb')
  unless respond_to?(name, true)
    raise NameError, "The function has no entry point \"#{name}\": define def #{name}(args) in main.rb."
  end
rescue Exception => e # rubocop:disable Lint/RescueException -- any load failure is reported
  $stderr.puts(e.full_message(highlight: false))
  exit!(1)
end

results = IO.new(3, 'w')
results.set_encoding(Encoding::UTF_8)
if ENV['__OW_WAIT_FOR_ACK'] && !ENV['__OW_WAIT_FOR_ACK'].empty?
  results.write("{\"ok\": true}\n")
  results.flush
end

while (raw = $stdin.gets)
  next if raw.strip.empty?

  request = JSON.parse(raw)
  if request['__isola'] == 'reseed'
    # A snapshot clone: every clone would otherwise draw the same numbers.
    srand(Base64.decode64(request['entropy'].to_s).unpack1('H*').to_i(16) ^ Random.new_seed)
    results.write("{\"ok\": true}\n")
    results.flush
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

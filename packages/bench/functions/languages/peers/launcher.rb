# A minimal ActionLoop loop for the bare ruby peer (see launcher.py).
require 'json'
load ARGV[0]
out = IO.new(3, 'w')
if ENV['__OW_WAIT_FOR_ACK']
  out.write("{\"ok\": true}\n")
  out.flush
end
$stdin.each_line do |line|
  request = JSON.parse(line)
  out.write("#{JSON.generate(main(request['value'] || {}))}\n")
  out.flush
  $stdout.puts 'XXX_THE_END_OF_A_WHISK_ACTIVATION_XXX'
  $stdout.flush
  $stderr.puts 'XXX_THE_END_OF_A_WHISK_ACTIVATION_XXX'
end

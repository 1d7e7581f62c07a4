import com.google.gson.JsonArray;
import com.google.gson.JsonElement;
import com.google.gson.JsonObject;
import com.google.gson.JsonParser;
import com.google.gson.JsonPrimitive;
import java.io.BufferedReader;
import java.io.FileDescriptor;
import java.io.FileOutputStream;
import java.io.InputStreamReader;
import java.io.OutputStreamWriter;
import java.io.PrintStream;
import java.io.Writer;
import java.lang.reflect.Field;
import java.lang.reflect.InvocationTargetException;
import java.lang.reflect.Method;
import java.lang.reflect.Modifier;
import java.net.URL;
import java.net.URLClassLoader;
import java.nio.charset.StandardCharsets;
import java.nio.file.Paths;
import java.security.SecureRandom;
import java.util.Base64;
import java.util.Map;
import java.util.Random;

/**
 * Isola's ActionLoop launcher for Java functions: {@code public static JsonObject main(JsonObject
 * args)} (Gson), named by {@code Class} (method main) or {@code Class#method}. It serves
 * activations: one JSON line in on stdin, one JSON line out on fd 3, and the end-of-activation
 * sentinel on stdout and stderr after each.
 *
 * <p>Started ahead of its function (a blank sandbox's runtime, {@code __ISOLA_WAIT_FOR_LOAD} set,
 * with only the launcher and Gson on its class path), it waits for a line {@code {"__isola":
 * "load", "dir": ..., "args": [<Class or Class#method>], "env": {...}}} on stdin and loads the
 * function from function.jar in that directory.
 */
public class IsolaLauncher {
  private static final String SENTINEL = "XXX_THE_END_OF_A_WHISK_ACTIVATION_XXX";

  public static void main(String[] argv) throws Exception {
    // Java 17 writes in the platform's charset, which is ASCII under the C locale.
    PrintStream out = new PrintStream(new FileOutputStream(FileDescriptor.out), true, StandardCharsets.UTF_8);
    PrintStream err = new PrintStream(new FileOutputStream(FileDescriptor.err), true, StandardCharsets.UTF_8);
    System.setOut(out);
    System.setErr(err);

    Map<String, String> env = writableEnvironment();
    Writer results = new OutputStreamWriter(new FileOutputStream("/dev/fd/3"), StandardCharsets.UTF_8);
    BufferedReader input = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
    String target = argv.length > 0 ? argv[0] : "Main";
    ClassLoader loader = IsolaLauncher.class.getClassLoader();
    if (System.getenv("__ISOLA_WAIT_FOR_LOAD") != null) {
      if (env != null) env.remove("__ISOLA_WAIT_FOR_LOAD");
      prime(results, out);
      JsonObject load = waitForLoad(input, results);
      if (load == null) System.exit(0);
      JsonArray args = load.getAsJsonArray("args");
      if (args != null && args.size() > 0) target = args.get(0).getAsString();
      JsonObject loadEnv = load.getAsJsonObject("env");
      if (loadEnv != null && env != null) {
        for (Map.Entry<String, JsonElement> entry : loadEnv.entrySet()) env.put(entry.getKey(), entry.getValue().getAsString());
      }
      URL jar = Paths.get(load.get("dir").getAsString(), "function.jar").toUri().toURL();
      loader = new URLClassLoader(new URL[] {jar}, loader);
    }
    int hash = target.indexOf('#');
    String className = hash >= 0 ? target.substring(0, hash) : target;
    String methodName = hash >= 0 ? target.substring(hash + 1) : "main";
    Method function;
    try {
      function = Class.forName(className, true, loader).getMethod(methodName, JsonObject.class);
      if (!Modifier.isStatic(function.getModifiers()) || !JsonObject.class.isAssignableFrom(function.getReturnType())) {
        throw new NoSuchMethodException(
            "The function must be declared public static JsonObject " + methodName + "(JsonObject args) in " + className + ".");
      }
    } catch (Throwable error) {
      error.printStackTrace();
      err.flush();
      System.exit(1);
      return;
    }

    // The paths of the first activation taken once now: a snapshot taken after loading then holds
    // them ready, and under an emulated CPU the restored clone has less code to run afresh.
    prime(results, out);
    String ack = System.getenv("__OW_WAIT_FOR_ACK");
    if (ack != null && !ack.isEmpty()) {
      results.write("{\"ok\": true}\n");
      results.flush();
    }
    for (String raw; (raw = input.readLine()) != null; ) {
      if (raw.isBlank()) continue;
      JsonObject request = JsonParser.parseString(raw).getAsJsonObject();
      JsonElement control = request.get("__isola");
      if (control != null && "reseed".equals(control.getAsString())) {
        reseed(request.get("entropy").getAsString());
        results.write("{\"ok\": true}\n");
        results.flush();
        continue;
      }
      for (Map.Entry<String, JsonElement> entry : request.entrySet()) {
        if (entry.getKey().equals("value")) continue;
        JsonElement value = entry.getValue();
        String text = value.isJsonPrimitive() && value.getAsJsonPrimitive().isString() ? value.getAsString() : value.toString();
        String name = "__OW_" + entry.getKey().toUpperCase();
        if (env != null) env.put(name, text);
        System.setProperty(name, text);
      }
      JsonElement value = request.get("value");
      JsonObject args = value != null && value.isJsonObject() ? value.getAsJsonObject() : new JsonObject();
      String line;
      try {
        Object result = function.invoke(null, args);
        line = result == null ? "null" : result.toString();
      } catch (Throwable thrown) {
        Throwable error = thrown instanceof InvocationTargetException && thrown.getCause() != null ? thrown.getCause() : thrown;
        error.printStackTrace();
        String message = error.getMessage() != null && !error.getMessage().isEmpty() ? error.getMessage() : error.getClass().getName();
        JsonObject failure = new JsonObject();
        failure.add("error", new JsonPrimitive(message));
        line = failure.toString();
      }
      out.flush();
      err.flush();
      results.write(line + "\n");
      results.flush();
      out.println(SENTINEL);
      err.println(SENTINEL);
    }
  }

  /** A runtime started ahead: answers reseeds until told which function to load; null if stdin ended. */
  private static JsonObject waitForLoad(BufferedReader input, Writer results) throws Exception {
    for (String raw; (raw = input.readLine()) != null; ) {
      if (raw.isBlank()) continue;
      JsonObject request = JsonParser.parseString(raw).getAsJsonObject();
      JsonElement control = request.get("__isola");
      if (control == null) continue;
      if ("reseed".equals(control.getAsString())) {
        reseed(request.get("entropy").getAsString());
        results.write("{\"ok\": true}\n");
        results.flush();
      } else if ("load".equals(control.getAsString())) {
        return request;
      }
    }
    return null;
  }

  /**
   * Parses and prints a request and a result the way an activation does, without calling the
   * function (which may have effects): the classes and code paths of the first activation are
   * then loaded before it.
   */
  private static void prime(Writer results, PrintStream out) throws Exception {
    JsonObject request =
        JsonParser.parseString("{\"value\":{\"text\":\"h\u00e9llo\",\"list\":[1,2.5,true,null],\"nested\":{}},\"deadline\":\"1\"}")
            .getAsJsonObject();
    StringBuilder sink = new StringBuilder();
    for (Map.Entry<String, JsonElement> entry : request.entrySet()) {
      JsonElement value = entry.getValue();
      sink.append("__OW_").append(entry.getKey().toUpperCase());
      sink.append(value.isJsonPrimitive() && value.getAsJsonPrimitive().isString() ? value.getAsString() : value.toString());
    }
    JsonObject result = new JsonObject();
    result.add("error", new JsonPrimitive("x"));
    result.addProperty("n", 1);
    result.add("args", request.getAsJsonObject("value").deepCopy());
    sink.append(result.toString());
    sink.toString().getBytes(StandardCharsets.UTF_8);
    // The call through reflection, on a method of ours; a reseed (SecureRandom's providers); an
    // empty line on fd 3 (which the agent skips) and nothing on stdout: their first use is slow.
    IsolaLauncher.class.getDeclaredMethod("identity", JsonObject.class).invoke(null, result);
    // Setting an activation's variables, as each request does, and taking them back.
    Map<String, String> env = writableEnvironment();
    if (env != null) {
      env.put("__OW_ISOLA_PRIME", "1");
      env.remove("__OW_ISOLA_PRIME");
    }
    System.setProperty("__OW_ISOLA_PRIME", "1");
    System.clearProperty("__OW_ISOLA_PRIME");
    byte[] seed = new byte[16];
    new Random().nextBytes(seed);
    reseed(Base64.getEncoder().encodeToString(seed));
    results.write("\n");
    results.flush();
    out.print("");
    out.flush();
  }

  /** What prime() calls through reflection. */
  private static JsonObject identity(JsonObject value) {
    return value;
  }

  /**
   * The map behind System.getenv(), so that each activation's __OW_ variables are seen there as in
   * other languages. Reached through sun.misc.Unsafe, which needs no --add-opens; null if that fails.
   */
  @SuppressWarnings("unchecked")
  private static Map<String, String> writableEnvironment() {
    try {
      Map<String, String> env = System.getenv();
      Field inner = env.getClass().getDeclaredField("m");
      Object unsafe = unsafe();
      long offset = (long) unsafe.getClass().getMethod("objectFieldOffset", Field.class).invoke(unsafe, inner);
      return (Map<String, String>) unsafe.getClass().getMethod("getObject", Object.class, long.class).invoke(unsafe, env, offset);
    } catch (Throwable error) {
      return null;
    }
  }

  private static Object unsafe() throws Exception {
    Field field = Class.forName("sun.misc.Unsafe").getDeclaredField("theUnsafe");
    field.setAccessible(true);
    return field.get(null);
  }

  /**
   * After a snapshot restore: reseeds Math.random()'s shared generator and SecureRandom's default
   * seed source, so that every clone draws its own numbers.
   */
  private static void reseed(String entropy) {
    byte[] bytes = Base64.getDecoder().decode(entropy);
    SecureRandom fresh = new SecureRandom();
    fresh.setSeed(bytes);
    try {
      Class<?> holder = Class.forName("java.lang.Math$RandomNumberGeneratorHolder");
      Field field = holder.getDeclaredField("randomNumberGenerator");
      Object unsafe = unsafe();
      Object base = unsafe.getClass().getMethod("staticFieldBase", Field.class).invoke(unsafe, field);
      long offset = (long) unsafe.getClass().getMethod("staticFieldOffset", Field.class).invoke(unsafe, field);
      Random shared = (Random) unsafe.getClass().getMethod("getObject", Object.class, long.class).invoke(unsafe, base, offset);
      shared.setSeed(fresh.nextLong());
    } catch (Throwable error) {
      // Math.random() was never called: its generator is made, freshly seeded, on first use.
    }
  }
}

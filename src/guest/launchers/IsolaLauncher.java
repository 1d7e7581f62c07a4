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
import java.nio.charset.StandardCharsets;
import java.security.SecureRandom;
import java.util.Base64;
import java.util.Map;
import java.util.Random;

/**
 * Isola's ActionLoop launcher for Java functions: {@code public static JsonObject main(JsonObject
 * args)} (Gson), named by {@code Class} (method main) or {@code Class#method}. It serves
 * activations: one JSON line in on stdin, one JSON line out on fd 3, and the end-of-activation
 * sentinel on stdout and stderr after each.
 */
public class IsolaLauncher {
  private static final String SENTINEL = "XXX_THE_END_OF_A_WHISK_ACTIVATION_XXX";

  public static void main(String[] argv) throws Exception {
    // Java 17 writes in the platform's charset, which is ASCII under the C locale.
    PrintStream out = new PrintStream(new FileOutputStream(FileDescriptor.out), true, StandardCharsets.UTF_8);
    PrintStream err = new PrintStream(new FileOutputStream(FileDescriptor.err), true, StandardCharsets.UTF_8);
    System.setOut(out);
    System.setErr(err);

    String target = argv.length > 0 ? argv[0] : "Main";
    int hash = target.indexOf('#');
    String className = hash >= 0 ? target.substring(0, hash) : target;
    String methodName = hash >= 0 ? target.substring(hash + 1) : "main";
    Method function;
    try {
      function = Class.forName(className).getMethod(methodName, JsonObject.class);
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

    Map<String, String> env = writableEnvironment();
    Writer results = new OutputStreamWriter(new FileOutputStream("/dev/fd/3"), StandardCharsets.UTF_8);
    String ack = System.getenv("__OW_WAIT_FOR_ACK");
    if (ack != null && !ack.isEmpty()) {
      results.write("{\"ok\": true}\n");
      results.flush();
    }
    BufferedReader input = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
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

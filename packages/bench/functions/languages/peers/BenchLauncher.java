import com.google.gson.JsonObject;
import com.google.gson.JsonParser;
import java.io.BufferedReader;
import java.io.FileOutputStream;
import java.io.InputStreamReader;
import java.io.PrintStream;
import java.lang.reflect.Method;
import java.nio.charset.StandardCharsets;

/** A minimal ActionLoop loop for the bare java peer (see launcher.py): args[0] names the class. */
public class BenchLauncher {
  public static void main(String[] args) throws Exception {
    Method main = Class.forName(args[0]).getMethod("main", JsonObject.class);
    // fd 3 is a FIFO, so opening it by path works (a socket would not).
    PrintStream out = new PrintStream(new FileOutputStream("/dev/fd/3"), false, StandardCharsets.UTF_8);
    if (System.getenv("__OW_WAIT_FOR_ACK") != null) {
      out.print("{\"ok\": true}\n");
      out.flush();
    }
    BufferedReader in = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
    for (String line; (line = in.readLine()) != null; ) {
      JsonObject request = JsonParser.parseString(line).getAsJsonObject();
      JsonObject value = request.has("value") ? request.getAsJsonObject("value") : new JsonObject();
      out.print(main.invoke(null, value).toString() + "\n");
      out.flush();
      System.out.println("XXX_THE_END_OF_A_WHISK_ACTIVATION_XXX");
      System.out.flush();
      System.err.println("XXX_THE_END_OF_A_WHISK_ACTIVATION_XXX");
    }
  }
}

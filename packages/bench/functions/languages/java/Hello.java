import com.google.gson.JsonElement;
import com.google.gson.JsonObject;

public class Hello {
  public static JsonObject main(JsonObject args) {
    JsonElement name = args.get("name");
    String who = name == null || name.isJsonNull() || name.getAsString().isEmpty() ? "world" : name.getAsString();
    JsonObject result = new JsonObject();
    result.addProperty("greeting", "Hello " + who);
    return result;
  }
}

// The course's tests for Java submissions (class Solution with static isPrime(long) and gcd(long, long)),
// run inside the grading sandbox as the action's main(JsonObject).
import com.google.gson.JsonArray;
import com.google.gson.JsonObject;
import java.util.ArrayList;
import java.util.List;
import java.util.function.BooleanSupplier;

public class Grader {
  private record Test(String name, BooleanSupplier check) {}

  public static JsonObject main(JsonObject args) {
    List<Test> tests = new ArrayList<>();
    tests.add(new Test("test_small_primes", () -> {
      StringBuilder found = new StringBuilder();
      for (long n = 0; n < 20; n++) if (Solution.isPrime(n)) found.append(n).append(',');
      return found.toString().equals("2,3,5,7,11,13,17,19,");
    }));
    tests.add(new Test("test_large_prime", () -> Solution.isPrime(1_000_003L) && !Solution.isPrime(1_000_001L)));
    tests.add(new Test("test_gcd", () -> Solution.gcd(12, 18) == 6 && Solution.gcd(17, 5) == 1));
    tests.add(new Test("test_gcd_zero", () -> Solution.gcd(0, 9) == 9 && Solution.gcd(9, 0) == 9));
    JsonArray results = new JsonArray();
    int passed = 0;
    for (Test test : tests) {
      JsonObject result = new JsonObject();
      result.addProperty("name", test.name());
      long started = System.nanoTime();
      try {
        boolean ok = test.check().getAsBoolean();
        result.addProperty("passed", ok);
        result.addProperty("message", ok ? "" : "AssertionError: wrong answer");
        if (ok) passed++;
      } catch (Throwable error) {
        result.addProperty("passed", false);
        result.addProperty("message", (error.getClass().getSimpleName() + ": " + error.getMessage()));
      }
      result.addProperty("ms", (System.nanoTime() - started) / 1e6);
      results.add(result);
    }
    JsonObject report = new JsonObject();
    report.addProperty("passed", passed);
    report.addProperty("total", tests.size());
    report.add("tests", results);
    return report;
  }
}

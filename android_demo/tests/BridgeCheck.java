import dev.tether.HeadTuner;
import dev.tether.Model;
import dev.tether.Session;
import dev.tether.TetherException;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.file.Files;
import java.nio.file.Paths;

/**
 * The bridge on the desktop JVM (tests/android_demo/test_bridge.py runs it):
 *
 *   java -Djava.library.path=LIBDIR -cp CLASSES BridgeCheck classify MODEL INPUTS.f32 N
 *       one line per input: the top class, then the 10 probabilities
 *   java ... BridgeCheck finetune FULL FEATURES HEAD_INPUT TRAIN.f32 TRAIN.i32 TEST.f32
 *       TEST.i32 EPOCHS LR SEED OUT.tmodel
 *       lines "before ACC", "loss L1 L2 ...", "after ACC"; writes the exported model
 *   java ... BridgeCheck errors MODEL
 *       one line per refusal the bridge must make (closed handles, bad bytes, bad lengths)
 * Images are float32 little-endian, 28*28 values each; labels int32 little-endian.
 */
public final class BridgeCheck {
  private static final int PIXELS = 28 * 28;

  public static void main(String[] args) throws IOException {
    switch (args[0]) {
      case "classify":
        classify(args);
        break;
      case "finetune":
        finetune(args);
        break;
      case "errors":
        errors(Files.readAllBytes(Paths.get(args[1])));
        break;
      default:
        throw new IllegalArgumentException("unknown command " + args[0]);
    }
  }

  private static float[][] images(String path) throws IOException {
    ByteBuffer b = ByteBuffer.wrap(Files.readAllBytes(Paths.get(path))).order(ByteOrder.LITTLE_ENDIAN);
    float[][] out = new float[b.remaining() / 4 / PIXELS][PIXELS];
    for (float[] image : out) {
      for (int i = 0; i < PIXELS; i++) image[i] = b.getFloat();
    }
    return out;
  }

  private static int[] labels(String path) throws IOException {
    ByteBuffer b = ByteBuffer.wrap(Files.readAllBytes(Paths.get(path))).order(ByteOrder.LITTLE_ENDIAN);
    int[] out = new int[b.remaining() / 4];
    for (int i = 0; i < out.length; i++) out[i] = b.getInt();
    return out;
  }

  private static void classify(String[] args) throws IOException {
    float[][] x = images(args[2]);
    try (Model model = Model.load(Files.readAllBytes(Paths.get(args[1])));
         Session session = new Session(model)) {
      for (float[] image : x) {
        float[] p = session.run(image);
        int best = 0;
        for (int c = 1; c < p.length; c++) if (p[c] > p[best]) best = c;
        StringBuilder line = new StringBuilder().append(best);
        for (float v : p) line.append(' ').append(v);
        System.out.println(line);
      }
    }
  }

  private static void finetune(String[] args) throws IOException {
    byte[] full = Files.readAllBytes(Paths.get(args[1]));
    byte[] features = Files.readAllBytes(Paths.get(args[2]));
    float[][] trainX = images(args[4]);
    int[] trainY = labels(args[5]);
    float[][] testX = images(args[6]);
    int[] testY = labels(args[7]);
    try (HeadTuner tuner = new HeadTuner(full, features, args[3], Integer.parseInt(args[8]),
                                         Float.parseFloat(args[9]), Long.parseLong(args[10]))) {
      System.out.println("before " + tuner.accuracy(testX, testY));
      StringBuilder loss = new StringBuilder("loss");
      for (float l : tuner.fit(trainX, trainY)) loss.append(' ').append(l);
      System.out.println(loss);
      System.out.println("after " + tuner.accuracy(testX, testY));
      Files.write(Paths.get(args[11]), tuner.export());
    }
  }

  private interface Call {
    void run();
  }

  private static void refused(String what, Call call) {
    try {
      call.run();
      System.out.println(what + ": ACCEPTED");
    } catch (IllegalStateException | IllegalArgumentException | TetherException e) {
      System.out.println(what + ": " + e.getClass().getSimpleName() + ": " + e.getMessage());
    }
  }

  private static void errors(byte[] good) {
    byte[] truncated = java.util.Arrays.copyOf(good, good.length / 2);
    refused("truncated", () -> Model.load(truncated));
    byte[] flipped = good.clone();
    flipped[flipped.length / 2] ^= 0x55;
    refused("corrupted", () -> Model.load(flipped));
    Model model = Model.load(good);
    Session session = new Session(model);
    refused("short input", () -> session.run(new float[3]));
    session.close();
    session.close();
    refused("closed session", () -> session.run(new float[PIXELS]));
    model.close();
    refused("closed model", () -> model.inputShape(0));
    refused("session of closed model", () -> new Session(model));
    refused("trainer of closed model",
            () -> new dev.tether.Trainer(model, "features", 32, dev.tether.Trainer.ADAM, 1e-3f, 0, 0));
    try (Model again = Model.load(good)) {
      refused("unknown head input",
              () -> new dev.tether.Trainer(again, "no_such_tensor", 32, dev.tether.Trainer.ADAM,
                                           1e-3f, 0, 0));
    }
  }
}

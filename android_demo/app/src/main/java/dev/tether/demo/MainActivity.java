package dev.tether.demo;

import android.app.Activity;
import android.content.Intent;
import android.graphics.Bitmap;
import android.graphics.drawable.BitmapDrawable;
import android.os.Bundle;
import android.view.View;
import android.widget.Button;
import android.widget.CompoundButton;
import android.widget.ImageView;
import android.widget.Switch;
import android.widget.TextView;
import android.widget.Toast;

import java.io.IOException;
import java.util.Arrays;

import dev.tether.Model;
import dev.tether.Session;

/**
 * Draw a digit, Classify: the top 3 classes with their probabilities and the engine's latency.
 * The fp32 model is the fine-tuned one (files/digits_finetuned.tmodel) when present, else the
 * bundled asset; the int8 switch picks the bundled int8 model.
 */
public class MainActivity extends Activity {
    private ModelStore store;
    private DrawingView pad;
    private Switch int8;
    private TextView status, result, latency;
    private ImageView preview;
    private Button classify, reset;

    private Model model;
    private Session session;
    private String modelLabel = "";
    private int side = Digitizer.SIDE;

    @Override
    protected void onCreate(Bundle savedInstanceState) {
        super.onCreate(savedInstanceState);
        setContentView(R.layout.activity_main);
        store = new ModelStore(this);
        pad = (DrawingView) findViewById(R.id.pad);
        int8 = (Switch) findViewById(R.id.int8);
        status = (TextView) findViewById(R.id.status);
        result = (TextView) findViewById(R.id.result);
        latency = (TextView) findViewById(R.id.latency);
        preview = (ImageView) findViewById(R.id.preview);
        classify = (Button) findViewById(R.id.classify);
        reset = (Button) findViewById(R.id.reset);

        classify.setOnClickListener(new View.OnClickListener() {
            @Override
            public void onClick(View v) {
                classify();
            }
        });
        findViewById(R.id.clear).setOnClickListener(new View.OnClickListener() {
            @Override
            public void onClick(View v) {
                pad.clear();
                result.setText(R.string.result_hint);
                latency.setText("");
                preview.setImageDrawable(null);
            }
        });
        int8.setOnCheckedChangeListener(new CompoundButton.OnCheckedChangeListener() {
            @Override
            public void onCheckedChanged(CompoundButton button, boolean checked) {
                loadModel();
                if (!pad.isEmpty() && session != null) classify();
            }
        });
        findViewById(R.id.teach).setOnClickListener(new View.OnClickListener() {
            @Override
            public void onClick(View v) {
                startActivity(new Intent(MainActivity.this, TeachActivity.class));
            }
        });
        reset.setOnClickListener(new View.OnClickListener() {
            @Override
            public void onClick(View v) {
                boolean deleted = store.deleteFinetuned();
                Toast.makeText(MainActivity.this, deleted ? R.string.reset_done : R.string.reset_none,
                        Toast.LENGTH_SHORT).show();
                loadModel();
            }
        });
    }

    @Override
    protected void onResume() {
        super.onResume();
        loadModel();  // picks up a model the Teach screen just saved
    }

    @Override
    protected void onPause() {
        closeModel();
        super.onPause();
    }

    private void closeModel() {
        if (session != null) session.close();
        if (model != null) model.close();
        session = null;
        model = null;
    }

    /** (Re)opens the model the switch and the files directory select; errors go to the UI. */
    private void loadModel() {
        closeModel();
        reset.setEnabled(store.hasFinetuned());
        classify.setEnabled(false);
        String nativeError = ModelStore.loadNative();
        if (nativeError != null) {
            status.setText(getString(R.string.error_native, nativeError));
            return;
        }
        String notice = null;
        String name = int8.isChecked() ? ModelStore.INT8 : ModelStore.FP32;
        try {
            if (int8.isChecked()) {
                open(store.asset(ModelStore.INT8), getString(R.string.model_int8_bundled));
            } else if (store.hasFinetuned()) {
                name = ModelStore.FINETUNED;
                try {
                    open(store.classifier(), getString(R.string.model_fp32_finetuned));
                } catch (RuntimeException e) {  // e.g. written by an older engine
                    notice = getString(R.string.finetuned_rejected, e.getMessage());
                    name = ModelStore.FP32;
                    open(store.asset(ModelStore.FP32), getString(R.string.model_fp32_bundled));
                }
            } else {
                open(store.asset(ModelStore.FP32), getString(R.string.model_fp32_bundled));
            }
        } catch (IOException | RuntimeException e) {
            closeModel();
            status.setText(getString(R.string.error_model, name, e.getMessage()));
            return;
        }
        int[] shape = model.inputShape(0);
        // NHWC with one channel, square: the pad's drawing is digitized to side x side.
        if (shape.length != 4 || shape[0] != 1 || shape[1] != shape[2] || shape[3] != 1) {
            String shown = Arrays.toString(shape);
            closeModel();
            status.setText(getString(R.string.error_input, shown));
            return;
        }
        side = shape[1];
        String text = getString(R.string.status_model, modelLabel, Arrays.toString(shape));
        status.setText(notice == null ? text : text + "\n" + notice);
        classify.setEnabled(true);
    }

    private void open(byte[] bytes, String label) {
        Model m = Model.load(bytes);
        try {
            session = new Session(m);
        } catch (RuntimeException e) {
            m.close();
            throw e;
        }
        model = m;
        modelLabel = label;
    }

    private void classify() {
        if (session == null) return;
        float[] input = pad.toModelInput(side);
        if (input == null) {
            Toast.makeText(this, R.string.draw_first, Toast.LENGTH_SHORT).show();
            return;
        }
        preview.setImageDrawable(previewOf(input, side));
        float[] out;
        try {
            out = session.run(input);
        } catch (RuntimeException e) {
            result.setText(getString(R.string.error_run, e.getMessage()));
            return;
        }
        float[] probs = Ranking.probabilities(out);
        result.setText(Ranking.describe(probs, 3));
        latency.setText(getString(R.string.latency, session.lastInvokeNanos() / 1e6, modelLabel));
    }

    /** The model's input, magnified without smoothing, so the user sees what it saw. */
    private BitmapDrawable previewOf(float[] input, int side) {
        int[] argb = new int[side * side];
        for (int i = 0; i < argb.length; i++) {
            int g = Math.round(255 * Math.max(0f, Math.min(1f, input[i])));
            argb[i] = 0xff000000 | (g << 16) | (g << 8) | g;
        }
        Bitmap small = Bitmap.createBitmap(argb, side, side, Bitmap.Config.ARGB_8888);
        BitmapDrawable d = new BitmapDrawable(getResources(), small);
        d.setFilterBitmap(false);
        return d;
    }
}

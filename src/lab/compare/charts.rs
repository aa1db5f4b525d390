//! Drawing the charts: each series over time with both workers on one chart, bad in red and
//! optimized in green as on the Grafana dashboard, as SVG (for the HTML report and browsers) and
//! PNG (for slides, issues and chat).
//!
//! Both formats come from one drawing function through plotters' backends, so they cannot
//! disagree. Text in the PNG is rasterized from a font compiled into the binary (Noto Sans,
//! from the `notosans` crate), not looked up on the system: the charts render the same on a
//! CI machine, in a container and under Nix, where there may be no fonts at all.

use std::sync::OnceLock;

use plotters::coord::Shift;
use plotters::prelude::*;

use super::series::Chart;
use super::typeset::Typeset;
use crate::kind::WorkerKind;

pub const WIDTH: u32 = 900;
pub const HEIGHT: u32 = 420;

/// Height of the strip with the title and the legend.
const HEADER: u32 = 44;

/// Grafana's named colours "red" and "green", which the dashboard gives the two workers.
pub const BAD_COLOR: RGBColor = RGBColor(0xF2, 0x49, 0x5C);
pub const OPTIMIZED_COLOR: RGBColor = RGBColor(0x73, 0xBF, 0x69);
pub const EXERCISE_COLOR: RGBColor = RGBColor(0x56, 0x9C, 0xF2);

/// The family every text element names. In the SVG it is a name the viewer resolves; for the
/// PNG it is the embedded font registered under that name.
const FONT: &str = "sans-serif";

pub fn color(worker: WorkerKind) -> RGBColor {
    match worker {
        WorkerKind::Bad => BAD_COLOR,
        WorkerKind::Optimized => OPTIMIZED_COLOR,
        WorkerKind::Exercise => EXERCISE_COLOR,
    }
}

/// The chart as an SVG document.
pub fn svg(chart: &Chart) -> Result<String, String> {
    register_font()?;
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, (WIDTH, HEIGHT)).into_drawing_area();
        draw(&root, chart)?;
    }
    Ok(out)
}

/// The chart as a PNG image of [`WIDTH`] x [`HEIGHT`] pixels.
pub fn png(chart: &Chart) -> Result<Vec<u8>, String> {
    register_font()?;
    let mut rgb = vec![0u8; (WIDTH * HEIGHT * 3) as usize];
    {
        // Text typeset from the embedded font, not by plotters' own glyph placement (see
        // `typeset`): its titles came out as "worker_active_gor outines".
        let bitmap = BitMapBackend::with_buffer(&mut rgb, (WIDTH, HEIGHT));
        let root = Typeset::new(bitmap, notosans::REGULAR_TTF)?.into_drawing_area();
        draw(&root, chart)?;
    }
    let mut out = Vec::new();
    let mut encoder = png::Encoder::new(&mut out, WIDTH, HEIGHT);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder
        .write_header()
        .map_err(|e| format!("encoding {}.png: {e}", chart.name))?;
    writer
        .write_image_data(&rgb)
        .and_then(|()| writer.finish())
        .map_err(|e| format!("encoding {}.png: {e}", chart.name))?;
    Ok(out)
}

/// plotters looks fonts up by family name in a process-wide table; register ours once.
fn register_font() -> Result<(), String> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED.get_or_init(|| {
        plotters::style::register_font(FONT, FontStyle::Normal, notosans::REGULAR_TTF).is_ok()
    });
    ok.then_some(())
        .ok_or_else(|| "the embedded chart font cannot be loaded".to_owned())
}

fn draw<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, chart: &Chart) -> Result<(), String> {
    let fail = |e: DrawingAreaErrorKind<DB::ErrorType>| format!("drawing {}: {e}", chart.name);
    root.fill(&WHITE).map_err(fail)?;
    // Title and legend share a strip above the plot, so the legend never hides a line.
    let (header, body) = root.split_vertically(HEADER);
    header
        .draw(&Text::new(chart.title, (16, 14), (FONT, 20).into_font()))
        .map_err(fail)?;
    let mut x = WIDTH as i32 - 230;
    for line in &chart.lines {
        let style = color(line.worker).stroke_width(3);
        header
            .draw(&PathElement::new(vec![(x, 25), (x + 26, 25)], style))
            .map_err(fail)?;
        header
            .draw(&Text::new(
                line.worker.label(),
                (x + 32, 17),
                (FONT, 16).into_font(),
            ))
            .map_err(fail)?;
        x += 90;
    }

    let (x_max, y_min, y_max) = bounds(chart);
    let mut ctx = ChartBuilder::on(&body)
        .margin_left(14)
        .margin_right(24)
        .margin_bottom(10)
        .x_label_area_size(46)
        .y_label_area_size(78)
        .build_cartesian_2d(0f64..x_max, y_min..y_max)
        .map_err(fail)?;
    ctx.configure_mesh()
        .x_desc("time since start (s)")
        .y_desc(chart.y_label)
        .axis_desc_style((FONT, 16))
        .label_style((FONT, 14))
        .light_line_style(RGBColor(238, 238, 238))
        .bold_line_style(RGBColor(215, 215, 215))
        .x_label_formatter(&|v| tick(*v))
        .y_label_formatter(&|v| tick(*v))
        .draw()
        .map_err(fail)?;
    // Bad first and wider, optimized on top and narrower: where both workers show the same
    // value (an empty queue, a flat line at 0) the red still shows on both sides of the green,
    // rather than one line hiding the other.
    let mut lines: Vec<_> = chart.lines.iter().collect();
    lines.sort_by_key(|l| l.worker != WorkerKind::Bad);
    for line in lines {
        let width = if line.worker == WorkerKind::Bad { 5 } else { 2 };
        let style = color(line.worker).stroke_width(width);
        ctx.draw_series(LineSeries::new(line.points.iter().copied(), style))
            .map_err(fail)?;
    }
    root.present().map_err(fail)
}

/// The axes' ranges: time from 0 to the last point, values from 0 (or below, if any value is)
/// to a little above the highest, so a flat line at 0 stays visible at the bottom.
fn bounds(chart: &Chart) -> (f64, f64, f64) {
    let points = || chart.lines.iter().flat_map(|l| l.points.iter());
    let x_max = points().map(|p| p.0).fold(1.0, f64::max);
    let y_min = points().map(|p| p.1).fold(0.0, f64::min);
    let y_max = points().map(|p| p.1).fold(f64::MIN, f64::max);
    let y_max = if y_max > y_min {
        y_max + 0.08 * (y_max - y_min)
    } else {
        y_min + 1.0
    };
    (x_max, y_min, y_max)
}

/// Tick labels: large values in k and M, small ones with just enough decimals.
fn tick(v: f64) -> String {
    let a = v.abs();
    let text = if a >= 1e6 {
        format!("{:.1}M", v / 1e6)
    } else if a >= 1e4 {
        format!("{:.0}k", v / 1e3)
    } else if a >= 10.0 {
        format!("{v:.0}")
    } else if a >= 0.1 {
        format!("{v:.2}")
    } else {
        format!("{v:.4}")
    };
    match text.split_once('.') {
        Some((whole, decimals)) if !decimals.contains(|c: char| !c.is_ascii_digit()) => {
            let decimals = decimals.trim_end_matches('0');
            if decimals.is_empty() {
                whole.to_owned()
            } else {
                format!("{whole}.{decimals}")
            }
        }
        _ => text,
    }
}

#[cfg(test)]
mod tests {
    use super::super::series::Line;
    use super::*;

    fn chart() -> Chart {
        Chart {
            name: "live_tasks",
            title: "Live tokio tasks",
            y_label: "live tasks",
            lines: vec![
                Line {
                    worker: WorkerKind::Bad,
                    points: vec![(0.0, 10.0), (1.0, 30.0), (2.0, 50.0)],
                },
                Line {
                    worker: WorkerKind::Optimized,
                    points: vec![(0.0, 10.0), (1.0, 10.0), (2.0, 10.0)],
                },
            ],
        }
    }

    #[test]
    fn svg_has_both_lines_in_their_colours_and_the_labels() {
        let svg = svg(&chart()).unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..80]);
        for needle in [
            "#F2495C",
            "#73BF69",
            "\nbad\n",
            "\noptimized\n",
            "\nlive tasks\n",
        ] {
            assert!(svg.contains(needle), "no {needle} in the SVG");
        }
    }

    #[test]
    fn png_is_an_image_of_the_right_size_with_both_colours() {
        let png = png(&chart()).unwrap();
        let decoder = png::Decoder::new(std::io::Cursor::new(png));
        let mut reader = decoder.read_info().unwrap();
        let mut pixels = vec![0; reader.output_buffer_size().unwrap()];
        let info = reader.next_frame(&mut pixels).unwrap();
        assert_eq!((info.width, info.height), (WIDTH, HEIGHT));
        let has = |c: RGBColor| pixels.chunks(3).any(|p| p == [c.0, c.1, c.2]);
        assert!(has(BAD_COLOR) && has(OPTIMIZED_COLOR));
        // Text was drawn: there are dark pixels beyond the axes' lines.
        let dark = pixels
            .chunks(3)
            .filter(|p| p.iter().all(|&v| v < 80))
            .count();
        assert!(dark > 500, "{dark} dark pixels");
    }

    #[test]
    fn equal_lines_both_show_in_the_png() {
        let mut same = chart();
        for line in &mut same.lines {
            line.points = vec![(0.0, 0.0), (1.0, 0.0), (2.0, 0.0)];
        }
        // Bad listed last, as if it were drawn last: the order must not matter.
        same.lines.reverse();
        let png = png(&same).unwrap();
        let mut reader = png::Decoder::new(std::io::Cursor::new(png))
            .read_info()
            .unwrap();
        let mut pixels = vec![0; reader.output_buffer_size().unwrap()];
        reader.next_frame(&mut pixels).unwrap();
        let plot = &pixels[60 * WIDTH as usize * 3..];
        for c in [BAD_COLOR, OPTIMIZED_COLOR] {
            let n = plot.chunks(3).filter(|p| *p == [c.0, c.1, c.2]).count();
            assert!(n > 100, "{c:?}: {n} pixels");
        }
    }

    #[test]
    fn flat_charts_get_a_visible_range() {
        let mut flat = chart();
        for line in &mut flat.lines {
            line.points = vec![(0.0, 0.0), (5.0, 0.0)];
        }
        assert_eq!(bounds(&flat), (5.0, 0.0, 1.0));
        assert_eq!(tick(1500.0), "1500");
        assert_eq!(tick(25000.0), "25k");
        assert_eq!(tick(0.25), "0.25");
        assert_eq!(tick(0.2), "0.2");
        assert_eq!(tick(2.0), "2");
        assert_eq!(tick(1.5e6), "1.5M");
    }
}

// ECharts, tree-shaken to the charts and components the dashboard draws (about 60% of the full bundle).

import * as echarts from "echarts/core";
import { BarChart, BoxplotChart, HeatmapChart, LineChart, ScatterChart, SunburstChart } from "echarts/charts";
import {
  BrushComponent,
  DataZoomComponent,
  GridComponent,
  LegendComponent,
  MarkLineComponent,
  TitleComponent,
  ToolboxComponent,
  TooltipComponent,
  VisualMapComponent,
} from "echarts/components";
import { CanvasRenderer } from "echarts/renderers";

echarts.use([
  BarChart,
  BoxplotChart,
  HeatmapChart,
  LineChart,
  ScatterChart,
  SunburstChart,
  BrushComponent,
  DataZoomComponent,
  GridComponent,
  LegendComponent,
  MarkLineComponent,
  TitleComponent,
  ToolboxComponent,
  TooltipComponent,
  VisualMapComponent,
  CanvasRenderer,
]);

export { echarts };
export type { EChartsCoreOption as ChartOption } from "echarts/core";

/** How many series and data points an option draws (exposed on the chart for the browser tests). */
export function measure(option: { series?: unknown }): { series: number; points: number } {
  const list = Array.isArray(option.series) ? option.series : option.series ? [option.series] : [];
  let points = 0;
  for (const s of list as { data?: unknown[] }[]) points += Array.isArray(s.data) ? s.data.length : 0;
  return { series: list.length, points };
}

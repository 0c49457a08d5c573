// A column of a SortTable: how to read the value it sorts by.
export interface Column<R> {
  key: string;
  label: string;
  value: (row: R) => string | number | null | undefined;
  num?: boolean;
  title?: string;
}
